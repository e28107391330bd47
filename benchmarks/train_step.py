r"""Train-step throughput of a method's config on in-memory batches (no TensorFlow, no data),
ours (jitted JAX) beside the same step in PyTorch (benchmarks/torch_reference.py).

  python benchmarks/train_step.py --preset demo                 # CPU figure for the README
  python benchmarks/train_step.py --config bot --preset demo    # the BoT baseline
  python benchmarks/train_step.py --preset paper --dtype bfloat16 --peak-tflops 989 \
    --torch-device cuda                                          # H100, torch under bf16 autocast
  python benchmarks/train_step.py --preset paper --set batch=2,k=2,singlecam_batch=2 --steps 1 \
    --out /tmp/paper.json                                  # a CPU smoke run of the paper shapes

Images/s counts every image the step encodes: P*K multi-camera images plus the captioned views
(view 1 by the student, view 2 by the momentum encoder), on both sides. Model FLOPs are the
analytic count of benchmarks/flops.py (matrix products and convolutions; backward = 2x forward),
the same for both sides; XLA's cost analysis of our compiled step (which also counts
element-wise work and the optimizer) is printed beside it. MFU = analytic FLOP/s / peak (given
with --peak-tflops). Warm-up (compilation, first steps) is excluded from every timing.

The PyTorch side (`--torch eager,compile`, default both; `none` skips it) starts from our initial
train state (weights, statistics, EMA) and times its own step on the same batch: eager, and the
forward + losses under `torch.compile` (a failure becomes a "failed: <reason>" row). `--dtype
bfloat16` runs it under `torch.autocast(bfloat16)`. The step-0 loss agreement is measured in the
same run with every dropout / drop-path rate at 0 on both sides (random masks cannot agree).

Prints one table and writes benchmarks/results/train_step_<preset>.json (or --out).
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
# The PyTorch side may share the accelerator: JAX grows its memory pool on demand instead of
# taking 75 % of the device up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import dataclasses  # noqa: E402
import importlib  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import flops as analytic  # noqa: E402
from input_pipeline import masking  # noqa: E402
from retext_jax import methods, optim, sharding  # noqa: E402
from retext_jax.methods.base import SINGLECAM, DataInfo  # noqa: E402
from retext_jax.models import bert  # noqa: E402
from retext_jax.train_step import create_state, make_train_step  # noqa: E402

LOSS_KEYS = ("loss/id", "loss/triplet", "loss/iam", "loss/sp", "loss/rec", "loss/sc_id",
             "loss/total")


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


def loss_agreement(method: methods.Method, state, host: dict[str, np.ndarray], device: str,
                   autocast) -> dict:
  """Step-0 losses of ours and of the torch reference on the same state and batch, both without
  dropout: {"dropout_zeroed", "ours", "torch", "max_abs_diff"}."""
  from benchmarks import torch_reference as tr

  plain, zeroed = tr.without_dropout(method)

  @jax.jit
  def losses(state, batch):
    rng = jax.random.fold_in(state["rng"], state["step"])
    total, (metrics, _) = plain.loss_fn(state["params"], state, batch, rng)
    return {**metrics, "loss/total": total}

  ours = {k: float(v) for k, v in jax.device_get(losses(state, host)).items()}
  step = tr.TorchTrainStep(plain, state, device=device, autocast=autocast)
  import torch

  with torch.no_grad():
    total, metrics, _ = step.loss(step.to_torch(host))
  theirs = {k: float(v) for k, v in {**metrics, "loss/total": total}.items()}
  keys = [k for k in LOSS_KEYS if k in ours]
  return {"dropout_zeroed": zeroed, "ours": {k: ours[k] for k in keys},
          "torch": {k: theirs.get(k) for k in keys},
          "max_abs_diff": {k: abs(ours[k] - theirs[k]) if k in theirs else None for k in keys}}


def time_torch(method: methods.Method, state, host: dict[str, np.ndarray], mode: str,
               device: str, autocast, steps: int) -> dict:
  """Seconds per PyTorch step (`mode` "eager" or "compile") after two warm-up steps."""
  import torch

  from benchmarks import torch_reference as tr

  def sync(metrics):
    float(metrics["loss/total"])
    if device == "cuda":
      torch.cuda.synchronize()

  t0 = time.perf_counter()
  step = tr.TorchTrainStep(method, state, device=device, autocast=autocast,
                           compile=mode == "compile")
  batch = step.to_torch(host)
  build_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(2):  # compilation (compile), allocator and kernel caches (both)
    sync(step(batch))
  warmup_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    metrics = step(batch)
  sync(metrics)
  dt = (time.perf_counter() - t0) / steps
  return {"step_s": dt, "build_s": build_s, "warmup_s": warmup_s,
          "loss_total_last": float(metrics["loss/total"])}


def torch_side(args, method: methods.Method, state, host: dict[str, np.ndarray],
               images: int) -> dict:
  """The PyTorch rows and the loss agreement, or why there are none."""
  modes = [m for m in args.torch.split(",") if m and m != "none"]
  if not modes:
    return {"skipped": "--torch none"}
  if method.name not in ("retext", "bot"):
    return {"skipped": f"the torch reference covers retext and bot, not {method.name}"}
  import torch
  import transformers

  if args.torch_device == "cuda" and not torch.cuda.is_available():
    return {"skipped": "--torch-device cuda: torch sees no CUDA device"}
  autocast = {"float32": None, "bfloat16": torch.bfloat16}.get(args.dtype, "?")
  if autocast == "?":
    return {"skipped": f"--dtype {args.dtype}: the torch side knows float32 and bfloat16"}
  out = {"device": args.torch_device, "autocast": None if autocast is None else args.dtype,
         "torch": torch.__version__, "transformers": transformers.__version__,
         "threads": torch.get_num_threads(), "modes": {}}
  out["loss_agreement"] = loss_agreement(method, state, host, args.torch_device, autocast)
  for mode in modes:
    try:
      r = time_torch(method, state, host, mode, args.torch_device, autocast, args.steps)
      r["images_per_s"] = images / r["step_s"]
    except Exception as e:  # a failed torch.compile is a result to report, not a crash
      reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
      r = {"failed": reason[:300]}
    out["modes"][mode] = r
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--config", default="retext", help="configs/<name>.py (retext, bot, ...)")
  ap.add_argument("--preset", default="demo", choices=["demo", "tiny", "paper"])
  ap.add_argument("--set", default="", help="short overrides after the preset, e.g. "
                  "batch=2,k=2,singlecam_batch=2 (results then go to --out)")
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--num-classes", type=int, default=180)
  ap.add_argument("--peak-tflops", type=float, default=0.0)
  ap.add_argument("--torch", default="eager,compile",
                  help="PyTorch modes timed beside ours: eager, compile, or none")
  ap.add_argument("--torch-device", default="cpu", choices=["cpu", "cuda"])
  ap.add_argument("--out", default="", help="JSON path (default: "
                  "benchmarks/results/train_step_<preset>.json)")
  args = ap.parse_args()
  if args.set and not args.out:
    ap.error("--set changes the preset's shapes: name the result file with --out")
  unknown = sorted(set(args.torch.split(",")) - {"eager", "compile", "none", ""})
  if unknown:
    ap.error(f"--torch: unknown modes {unknown}; expected eager, compile or none")
  arg = args.preset + (f",{args.set}" if args.set else "")
  config = importlib.import_module(f"configs.{args.config}").get_config(arg)
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
  initial = jax.device_get(state)  # the torch side starts here (our step donates `state`)
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
  xla_flops = float(cost.get("flops", 0.0)) if cost else 0.0
  flops = analytic.retext_step(method, config) if args.config in ("retext", "bot") else xla_flops
  with jax.set_mesh(mesh):
    state, metrics = step(state, gb)  # warm-up
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(args.steps):
      state, metrics = step(state, gb)
    jax.block_until_ready(metrics)
  dt = (time.perf_counter() - t0) / args.steps
  del state, metrics
  images = len(host["multicam/image"]) + 2 * len(host.get("singlecam/view1", []))
  row = {
      "config": args.config, "preset": args.preset, "overrides": args.set, "dtype": args.dtype,
      "device": str(jax.devices()[0].device_kind),
      "num_devices": jax.device_count(), "images_per_step": images,
      "step_s": dt, "steps_per_s": 1 / dt, "images_per_s": images / dt,
      "compile_s": compile_s, "model_tflop_per_step": flops / 1e12,
      "flop_count": "analytic" if args.config in ("retext", "bot") else "xla",
      "xla_tflop_per_step": xla_flops / 1e12,
      "achieved_tflops": flops / dt / 1e12,
      "mfu": flops / dt / 1e12 / args.peak_tflops if args.peak_tflops else None,
      "params": int(sum(x.size for x in jax.tree_util.tree_leaves(initial["params"]))),
      "machine": platform.platform(), "cpus": os.cpu_count(),
  }
  row["torch"] = torch_side(args, method, initial, host, images)
  for r in row["torch"].get("modes", {}).values():
    if "images_per_s" in r:
      r["ours_over_torch"] = row["images_per_s"] / r["images_per_s"]
  print_table(args, row)
  name = args.preset if args.config == "retext" else f"{args.config}_{args.preset}"
  out = args.out or os.path.join(ROOT, "benchmarks", "results", f"train_step_{name}.json")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump(row, f, indent=2)


def print_table(args, row: dict) -> None:
  """Ours, PyTorch eager and PyTorch compile in one table, then the loss agreement."""
  flops = row["model_tflop_per_step"]

  def line(name, device, step_s, note=""):
    ips = row["images_per_step"] / step_s
    mfu = f"{flops / step_s / args.peak_tflops:.1%}" if args.peak_tflops else "n/a"
    ratio = f"{row['images_per_s'] / ips:.2f}x" if note != "ours" else "1.00x"
    print(f"| {name} | {device} | {args.dtype} | {row['images_per_step']} | {step_s:.3f} "
          f"| {ips:.1f} | {ratio} | {flops / step_s:.3f} | {mfu} |")

  print(f"{args.config} {args.preset}{',' + args.set if args.set else ''}: "
        f"{row['model_tflop_per_step']:.4f} TFLOP/step ({row['flop_count']} count, both sides; "
        f"XLA's cost analysis of our step: {row['xla_tflop_per_step']:.4f})")
  print("| implementation | device | dtype | images/step | step (s) | images/s | ours / this "
        "| TFLOP/s | MFU |")
  print("|---|---|---|---|---|---|---|---|---|")
  line("ours (JAX, jit)", row["device"], row["step_s"], "ours")
  t = row["torch"]
  if "skipped" in t:
    print(f"PyTorch side skipped: {t['skipped']}")
    return
  for mode, r in t["modes"].items():
    name = f"PyTorch {mode}"
    if "failed" in r:
      print(f"| {name} | {t['device']} | {args.dtype} | {row['images_per_step']} "
            f"| failed: {r['failed']} | | | | |")
    else:
      line(name, t["device"], r["step_s"])
  agree = t["loss_agreement"]
  diffs = ", ".join(f"{k.split('/')[1]} {v:.1e}" if v is not None else f"{k.split('/')[1]} "
                    "missing" for k, v in agree["max_abs_diff"].items())
  zeroed = ", ".join(agree["dropout_zeroed"]) or "none was on"
  print(f"step-0 losses, |ours - PyTorch| (dropout zeroed: {zeroed}): {diffs}")


if __name__ == "__main__":
  main()
