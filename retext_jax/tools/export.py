r"""Exports a trained feature extractor with `jax.export` (serialized StableHLO, weights inside).

  python -m retext_jax.tools.export --workdir workdirs/demo --out workdirs/demo/exported \
      --platforms cpu,cuda

Writes <out>/extractor.jax_exported and <out>/preprocessing.json. Use it without this package:

  import jax
  with open("workdirs/demo/exported/extractor.jax_exported", "rb") as f:
    exp = jax.export.deserialize(bytearray(f.read()))
  feats = exp.call(pixels)  # float32 [b, H, W, 3] RGB in [0, 255], resized per preprocessing.json

or `retext_jax.export.load_extractor(out)`. `--format saved_model` writes a TF SavedModel instead
(`tf.saved_model.load(out).signatures["serving_default"](pixels=...)["features"]`), and
`--format onnx` <out>/extractor.onnx through jax2onnx (pip install -e '.[onnx]'), input
`pixels`, output `features`, batch dimension free:

  import onnxruntime
  sess = onnxruntime.InferenceSession("workdirs/demo/onnx/extractor.onnx")
  feats = sess.run(["features"], {"pixels": pixels})[0]  # pixels as above, float32

or `retext_jax.export.load_onnx_extractor(out)`. Every format gives the framework's features
(`python -m retext_jax.tools.extract`) to float32 round-off.
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
  p.add_argument("--format", default="jax_export", choices=("jax_export", "saved_model", "onnx"),
                 help="serialized jax.export (default), a TF SavedModel through jax2tf, or an "
                      "ONNX model through jax2onnx")
  p.add_argument("--platforms", default="cpu",
                 help="jax_export: comma-separated cpu, cuda, rocm, tpu (lowered for each)")
  p.add_argument("--opset", type=int, default=export.ONNX_OPSET,
                 help=f"onnx: the ONNX opset to write ({export.ONNX_MIN_OPSET} or newer; an older "
                      "runtime may need an older one than the default)")
  args = p.parse_args(argv)
  platforms = tuple(x.strip() for x in args.platforms.split(",") if x.strip())
  unknown = [x for x in platforms if x not in export.PLATFORMS]
  if unknown or not platforms:
    p.error(f"--platforms {args.platforms!r}: expected a comma-separated subset of "
            f"{', '.join(export.PLATFORMS)} (JAX's names: gpu is 'cuda' or 'rocm')")
  if args.format == "onnx":
    if args.opset < export.ONNX_MIN_OPSET:
      p.error(f"--opset {args.opset}: the ONNX export needs opset {export.ONNX_MIN_OPSET} or "
              "newer")
    export.onnx_converter()  # a missing package is reported before the model loads
  trained = common.load_model(args)
  if args.format == "saved_model":
    path, what = export.export_saved_model(trained, args.out), "TF SavedModel"
  elif args.format == "onnx":
    path, what = export.export_onnx(trained, args.out, args.opset), f"ONNX opset {args.opset}"
  else:
    path, what = export.export_extractor(trained, args.out, platforms), "/".join(platforms)
  print(f"wrote {path} ({what}; images {trained.image_size[0]}x{trained.image_size[1]}, "
        f"step {trained.step}) and {export.PREPROCESSING}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
