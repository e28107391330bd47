"""Forward throughput of our ViT encoders beside transformers' PyTorch ViTModel (same config/batch).

  python benchmarks/encoders.py [--batch 32] [--dtype bfloat16] [--sizes small,base] [--device gpu]

Random weights (throughput does not depend on them); images 256x128, the Re-ID crop size. Prints a
table, writes benchmarks/results/encoders.json, and reports ours / PyTorch images per second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from retext_jax.models import vit

IMAGE_SIZE = (256, 128)


def _time(fn, iters: int, warmup: int) -> float:
  for _ in range(warmup):
    fn()
  start = time.perf_counter()
  for _ in range(iters):
    fn()
  return (time.perf_counter() - start) / iters


def bench_jax(size: str, batch: int, dtype: str, device: str, iters: int, warmup: int) -> float:
  dev = jax.devices(device)[0]
  config = vit.vit_config(size, image_size=IMAGE_SIZE, layer_norm_eps=1e-12)
  model = vit.ViT(config, dtype=jnp.dtype(dtype))
  x = jax.device_put(np.random.default_rng(0).normal(size=(batch, *IMAGE_SIZE, 3)), dev)
  x = x.astype(jnp.float32)
  params = jax.jit(model.init)(jax.device_put(jax.random.key(0), dev), x)  # follows x onto dev
  forward = jax.jit(lambda p, im: model.apply(p, im)["cls"])
  return batch / _time(lambda: forward(params, x).block_until_ready(), iters, warmup)


def bench_torch(size: str, batch: int, dtype: str, device: str, iters: int, warmup: int) -> float:
  import torch
  from transformers import ViTConfig, ViTModel

  cfg = vit.vit_config(size)
  hf = ViTConfig(
    hidden_size=cfg.hidden_size,
    num_hidden_layers=cfg.num_layers,
    num_attention_heads=cfg.num_heads,
    intermediate_size=cfg.mlp_dim,
    image_size=list(IMAGE_SIZE),
    patch_size=16,
  )
  tdev = "cuda" if device == "gpu" else "cpu"
  tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
  model = ViTModel(hf, add_pooling_layer=False).eval().to(tdev, tdtype)
  x = torch.randn(batch, 3, *IMAGE_SIZE, device=tdev, dtype=tdtype)

  def run():
    with torch.inference_mode():
      model(pixel_values=x)
    if tdev == "cuda":
      torch.cuda.synchronize()

  return batch / _time(run, iters, warmup)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
  parser.add_argument("--sizes", default="small,base")
  parser.add_argument("--iters", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
  parser.add_argument(
    "--out", default=os.path.join(os.path.dirname(__file__), "results", "encoders.json")
  )
  args = parser.parse_args()

  rows = []
  for size in args.sizes.split(","):
    common = (size, args.batch, args.dtype, args.device, args.iters, args.warmup)
    ours = bench_jax(*common)
    ref = None if args.no_torch else bench_torch(*common)
    rows.append(
      {
        "model": f"ViT-{size}/16",
        "image_size": list(IMAGE_SIZE),
        "batch": args.batch,
        "jax_images_per_s": round(ours, 2),
        "torch_images_per_s": None if ref is None else round(ref, 2),
        "ratio_jax_over_torch": None if ref is None else round(ours / ref, 3),
      }
    )
  print(f"{'model':<14}{'batch':>6}{'jax img/s':>12}{'torch img/s':>13}{'ratio':>8}")
  for r in rows:
    t = r["torch_images_per_s"]
    print(
      f"{r['model']:<14}{r['batch']:>6}{r['jax_images_per_s']:>12.1f}"
      f"{'-' if t is None else f'{t:.1f}':>13}{r['ratio_jax_over_torch'] or '-':>8}"
    )
  result = {
    "benchmark": "encoder forward, 256x128, random weights",
    "dtype": args.dtype,
    "device": args.device,
    "jax_device": str(jax.devices(args.device)[0]),
    "jax_version": jax.__version__,
    "cpu_count": os.cpu_count(),
    "machine": platform.machine(),
    "load_average": os.getloadavg(),
    "iters": args.iters,
    "rows": rows,
  }
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
