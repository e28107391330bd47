r"""Train-step throughput of a method's config on in-memory batches (no TensorFlow, no data).

  python benchmarks/train_step.py --preset demo                 # CPU figure for the README
  python benchmarks/train_step.py --config bot --preset demo    # the BoT baseline
  python benchmarks/train_step.py --preset paper --dtype bfloat16 --peak-tflops 989  # H100

Images/s counts every image the step encodes: P*K multi-camera images plus the captioned views
(view 1 by the student, view 2 by the momentum encoder). Model FLOPs come from XLA's cost
analysis of the compiled step; MFU = achieved FLOP/s / peak (given with --peak-tflops).
Prints a table and writes benchmarks/results/train_step_<preset>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dataclasses  # noqa: E402
import importlib  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from input_pipeline import masking  # noqa: E402
from retext_jax import methods, optim, sharding  # noqa: E402
from retext_jax.methods.base import SINGLECAM, DataInfo  # noqa: E402
from retext_jax.models import bert  # noqa: E402
from retext_jax.train_step import create_state, make_train_step  # noqa: E402


def build(config, num_classes: int, dtype: str) -> methods.Method:
  """The config's method at random init (weights do not matter for timing)."""
  config.model.dtype = dtype
  cls = methods.get(config.method)
  if config.init.get("text", None) == "" and config.loss.get("lambda_iam", 0) > 0:
    # The paper recipe names no local BERT: time BERT-base shapes (MiniLM only gives the vocab).
    config.init.text = "minilm"
    method = cls.create(config, DataInfo(num_classes)).method
    return cls(config, dataclasses.replace(method.model_config, text=bert.BertConfig()))
  return cls.create(config, DataInfo(num_classes)).method


def batch(config, method: methods.Method, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  inp = config.input
  h, w = inp.image_size
  p, k = inp.multicam_p, inp.multicam_k
  out = {
      "multicam/image": rng.normal(size=(p * k, h, w, 3)).astype(np.float32),
      "multicam/pid": np.repeat(np.arange(p), k).astype(np.int32),
      "multicam/camid": np.tile(np.arange(k), p).astype(np.int32),
  }
  if SINGLECAM in method.streams:
    b, length = inp.singlecam_batch_size, inp.max_text_len
    mcfg = method.model_config
    out.update({
        "singlecam/view1": rng.normal(size=(b, h, w, 3)).astype(np.float32),
        "singlecam/view2": rng.normal(size=(b, h, w, 3)).astype(np.float32),
        "singlecam/pid": (np.arange(b) // 2).astype(np.int32),
        "singlecam/tokens": rng.integers(1000, 2000, (b, length)).astype(np.int32),
        "singlecam/token_mask": np.ones((b, length), np.int32),
        "singlecam/patch_mask": masking.random_patch_mask(rng, b, mcfg.vit.num_patches,
                                                          mcfg.num_masked),
    })
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--config", default="retext", help="configs/<name>.py (retext, bot, ...)")
  ap.add_argument("--preset", default="demo", choices=["demo", "tiny", "paper"])
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--num-classes", type=int, default=180)
  ap.add_argument("--peak-tflops", type=float, default=0.0)
  args = ap.parse_args()
  config = importlib.import_module(f"configs.{args.config}").get_config(args.preset)
  config.unlock()
  method = build(config, args.num_classes, args.dtype)
  tx, scheds = optim.make_optimizer(config.optim, config.total_steps, method.backbone_keys)
  mesh = sharding.make_mesh()
  host = batch(config, method)

  def init():
    return create_state(method, tx, method.init_variables(jax.random.key(0)), jax.random.key(1))

  shardings = sharding.state_shardings(jax.eval_shape(init), mesh, fsdp=config.mesh.fsdp)
  with jax.set_mesh(mesh):
    state = jax.jit(init, out_shardings=shardings)()
  step = jax.jit(make_train_step(method, tx, scheds),
                 in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
  gb = sharding.global_batch(host, mesh)
  t0 = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled = step.lower(state, gb).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  flops = float(cost.get("flops", 0.0)) if cost else 0.0
  with jax.set_mesh(mesh):
    state, metrics = step(state, gb)  # warm-up
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(args.steps):
      state, metrics = step(state, gb)
    jax.block_until_ready(metrics)
  dt = (time.perf_counter() - t0) / args.steps
  images = len(host["multicam/image"]) + 2 * len(host.get("singlecam/view1", []))
  row = {
      "config": args.config, "preset": args.preset, "dtype": args.dtype,
      "device": str(jax.devices()[0].device_kind),
      "num_devices": jax.device_count(), "images_per_step": images,
      "step_s": dt, "steps_per_s": 1 / dt, "images_per_s": images / dt,
      "compile_s": compile_s, "model_tflop_per_step": flops / 1e12,
      "achieved_tflops": flops / dt / 1e12,
      "mfu": flops / dt / 1e12 / args.peak_tflops if args.peak_tflops else None,
      "params": int(sum(x.size for x in jax.tree_util.tree_leaves(state["params"]))),
      "machine": platform.platform(), "cpus": os.cpu_count(),
  }
  print("| preset | dtype | device | images/step | step (s) | images/s | TFLOP/step | MFU |")
  print("|---|---|---|---|---|---|---|---|")
  mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "n/a"
  print(f"| {args.preset} | {args.dtype} | {row['device']} | {images} | {dt:.3f} "
        f"| {row['images_per_s']:.1f} | {row['model_tflop_per_step']:.3f} | {mfu} |")
  name = args.preset if args.config == "retext" else f"{args.config}_{args.preset}"
  out = os.path.join(ROOT, "benchmarks", "results", f"train_step_{name}.json")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump(row, f, indent=2)


if __name__ == "__main__":
  main()
