"""The exported extractor against the framework: largest feature difference, size and time.

  python benchmarks/export.py --workdir workdirs/demo

Exports the workdir's extractor with `python -m retext_jax.tools.export` (jax.export), as a
TF SavedModel and as ONNX (when jax2onnx and onnxruntime are installed; run by onnxruntime on the
CPU), runs each on the first `--num` gallery images of the synthetic target domain (pixels read
as the evaluation pipeline reads them) and compares their features with the framework's (the
model's jitted Re-ID function on the same pixels, normalised). Prints a table and writes JSON
(default benchmarks/results/export.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retext_jax import tf_setup  # noqa: E402

tf_setup.quiet()

import tensorflow as tf  # noqa: E402

from input_pipeline import pipeline  # noqa: E402
from input_pipeline.registry import get_dataset  # noqa: E402
from retext_jax import data, export, inference  # noqa: E402
from retext_jax.methods import base  # noqa: E402
from retext_jax.tools import export as export_tool  # noqa: E402


def _timed(fn, x):
  fn(x)  # compile / warm up
  t0 = time.perf_counter()
  out = np.asarray(fn(x))
  return out, time.perf_counter() - t0


def _size(path: str) -> int:
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--num", type=int, default=256)
  p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                               "export.json"))
  args = p.parse_args()
  trained = inference.load(args.workdir)
  records = get_dataset("market1501", os.path.join(data.data_root(trained.config),
                                                   "target_market")).gallery[:args.num]
  h, w = trained.image_size
  pixels = np.stack([pipeline.load_image(tf.constant(r.path), (h, w)).numpy() for r in records])
  mean, std = np.asarray(trained.config.input.mean), np.asarray(trained.config.input.std)
  reid = trained.method.jitted(base.REID)
  framework, t_framework = _timed(lambda x: np.asarray(reid(trained.variables, x)),
                                  ((pixels / 255.0 - mean) / std).astype(np.float32))
  rows = {}
  with tempfile.TemporaryDirectory() as tmp:
    jax_dir, tf_dir, onnx_dir = (os.path.join(tmp, x) for x in ("jax", "tf", "onnx"))
    assert export_tool.main(["--workdir", args.workdir, "--out", jax_dir]) == 0
    assert export_tool.main(["--workdir", args.workdir, "--out", tf_dir,
                             "--format", "saved_model"]) == 0
    serving = tf.saved_model.load(tf_dir).signatures["serving_default"]
    artifacts = [
        ("jax.export", export.load_extractor(jax_dir), os.path.join(jax_dir, export.ARTIFACT)),
        ("TF SavedModel", lambda x: serving(pixels=tf.constant(x))["features"].numpy(), tf_dir)]
    try:
      export.onnx_converter()
      import onnxruntime  # noqa: F401
    except ImportError as e:
      print(f"no ONNX row: {e}", file=sys.stderr)
    else:
      assert export_tool.main(["--workdir", args.workdir, "--out", onnx_dir,
                               "--format", "onnx"]) == 0
      artifacts.append(("ONNX (onnxruntime CPU)", export.load_onnx_extractor(onnx_dir),
                        os.path.join(onnx_dir, export.ONNX_ARTIFACT)))
    for name, fn, path in artifacts:
      feats, seconds = _timed(fn, pixels)
      rows[name] = {"max_abs_diff": float(np.abs(feats - framework).max()),
                    "seconds": seconds, "megabytes": _size(path) / 2**20}
  result = {"workdir": os.path.abspath(args.workdir), "step": trained.step, "images": len(pixels),
            "framework_seconds": t_framework, "exports": rows}
  print(f"| artifact | max abs diff vs framework | size (MB) | seconds for {len(pixels)} images "
        f"(framework {t_framework:.2f}) |\n|---|---|---|---|")
  for name, r in rows.items():
    print(f"| {name} | {r['max_abs_diff']:.1e} | {r['megabytes']:.1f} | {r['seconds']:.2f} |")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
