r"""Exports a trained feature extractor with `jax.export` (serialized StableHLO, weights inside).

  python -m retext_jax.tools.export --workdir workdirs/demo --out exported/demo \
      --platforms cpu,cuda

Writes <out>/extractor.jax_exported and <out>/preprocessing.json. Use it without this package:

  import jax
  with open("exported/demo/extractor.jax_exported", "rb") as f:
    exp = jax.export.deserialize(bytearray(f.read()))
  feats = exp.call(pixels)  # float32 [b, H, W, 3] RGB in [0, 255], resized per preprocessing.json

or `retext_jax.export.load_extractor(out)`. `--format saved_model` writes a TF SavedModel instead
(`tf.saved_model.load(out).signatures["serving_default"](pixels=...)["features"]`). Either way the
features equal the framework's (`python -m retext_jax.tools.extract`) to float32 round-off.
"""

from __future__ import annotations

import sys

from retext_jax.tools import common


def main(argv: list[str] | None = None) -> int:
  return common.run(_main, argv)


def _main(argv: list[str] | None) -> int:
  from retext_jax import export

  p = common.parser("export", __doc__)
  common.add_model_args(p)
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--format", default="jax_export", choices=("jax_export", "saved_model"),
                 help="serialized jax.export (default) or a TF SavedModel through jax2tf")
  p.add_argument("--platforms", default="cpu",
                 help="jax_export: comma-separated cpu, cuda, rocm, tpu (lowered for each)")
  args = p.parse_args(argv)
  platforms = tuple(x.strip() for x in args.platforms.split(",") if x.strip())
  unknown = [x for x in platforms if x not in export.PLATFORMS]
  if unknown or not platforms:
    p.error(f"--platforms {args.platforms!r}: expected a comma-separated subset of "
            f"{', '.join(export.PLATFORMS)} (JAX's names: gpu is 'cuda' or 'rocm')")
  trained = common.load_model(args)
  if args.format == "saved_model":
    path, what = export.export_saved_model(trained, args.out), "TF SavedModel"
  else:
    path, what = export.export_extractor(trained, args.out, platforms), "/".join(platforms)
  print(f"wrote {path} ({what}; images {trained.image_size[0]}x{trained.image_size[1]}, "
        f"step {trained.step}) and {export.PREPROCESSING}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
