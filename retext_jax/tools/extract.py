r"""Extracts features of an image folder or a dataset split with a trained model.

  python -m retext_jax.tools.extract --workdir workdirs/demo \
      --dataset market1501:/data/market1501:gallery --out gallery.safetensors
  python -m retext_jax.tools.extract --workdir workdirs/demo --images my_photos/ --out my.npy

`.safetensors` holds `features` [n, D] float32 (L2-normalised), `pids`, `camids` and, in its
metadata, the image paths, the feature kind and the model's provenance (workdir, step, method,
a fingerprint of its weights and test-time options, the preprocessing), which `tools.query`
checks; `.npy` holds the features with a `<stem>.json` sidecar for the rest. `--kind reid`
(default) is the Re-ID feature; `--kind matching` the image-text matching embedding that text
queries (`tools.query --text`) compare against. Unreadable images are skipped and not listed.
"""

from __future__ import annotations

import sys

from retext_jax.tools import common


def main(argv: list[str] | None = None) -> int:
  return common.run(_main, argv)


def _main(argv: list[str] | None) -> int:
  p = common.parser("extract", __doc__)
  common.add_model_args(p)
  common.add_image_args(p)
  p.add_argument("--split", default="gallery", help="split of --dataset without :SPLIT")
  p.add_argument("--kind", default="reid", choices=common.FEATURE_KINDS)
  p.add_argument("--out", required=True, help="output .safetensors or .npy file")
  args = p.parse_args(argv)
  if not args.out.endswith((".safetensors", ".npy")):
    p.error("--out must end in .safetensors or .npy")
  records = common.records_from_args(args, default_split=args.split)
  trained = common.load_model(args)
  f = trained.embed_records(records, args.kind, args.batch_size, progress="extract")
  common.save_features(args.out, f.feats, f.records, args.kind, trained.provenance())
  skipped = len(records) - len(f.records)
  print(f"wrote {args.out}: {f.feats.shape[0]} x {f.feats.shape[1]} {args.kind} features "
        f"(step {trained.step}" + (f"; {skipped} unreadable images skipped)" if skipped else ")"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
