"""Converts pretrained weights (HF safetensors folders, Google ViT .npz) into converted folders.

  python -m retext_jax.tools.convert --from ~/hf/vit-base-patch16-224-in21k --kind vit \
      --out ~/ckpt/vit_b16_256x128 --image-size 256,128

writes `DIR/params/` (orbax) and `DIR/model_config.json`, the format of
`retext_jax.models.pretrained` (which also reads it back: `load_converted(DIR)`). Configs point
`config.init.image` / `config.init.text` at DIR. Bad input ends with one line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

from retext_jax.models.pretrained import CONFIG_FILE, KINDS, convert
from retext_jax.models.weights import WeightImportError
from retext_jax.tools import common


def _image_size(text: str) -> tuple[int, int]:
  try:
    parts = tuple(int(p) for p in text.split(","))
  except ValueError:
    parts = ()
  if len(parts) == 1:
    parts = parts * 2
  if len(parts) != 2 or min(parts) <= 0:
    raise argparse.ArgumentTypeError(f"expected H,W (e.g. 256,128), got {text!r}")
  return parts


def main(argv: list[str] | None = None) -> int:
  """The command line; every user mistake is one `error:` line and exit code 2."""
  return common.run(_main, argv)


def _main(argv: list[str] | None) -> int:
  parser = common.parser("convert", __doc__.split("\n\n")[0])
  parser.add_argument("--from", dest="source", required=True, help="HF folder or .npz file")
  parser.add_argument("--kind", required=True, choices=KINDS)
  parser.add_argument("--out", required=True, help="output folder (must not hold params/)")
  parser.add_argument("--image-size", type=_image_size, help="H,W for image towers, e.g. 256,128")
  parser.add_argument("--stride", type=int, help="ViT patch stride (< patch: overlapping)")
  args = parser.parse_args(argv)
  options = {}
  if args.kind in ("vit", "clip"):
    options = {"image_size": args.image_size, "stride": args.stride}
  elif args.image_size or args.stride:
    parser.error(f"--image-size/--stride do not apply to --kind {args.kind}")
  try:
    params, config = convert(args.source, args.kind, args.out, **options)
  except WeightImportError as e:
    print(f"error: {e.summary(max_keys=5)}", file=sys.stderr)
    return 2
  count = sum(int(np.prod(np.shape(x))) for x in jax.tree_util.tree_leaves(params))
  print(f"wrote {args.out}: {args.kind} with {count:,} params, config {CONFIG_FILE}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
