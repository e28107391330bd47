r"""Train-step throughput of a ReText config on in-memory batches (no TensorFlow, no data).

  python benchmarks/train_step.py --preset demo                 # CPU figure for the README
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

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import retext as retext_config  # noqa: E402
from retext_jax import optim, sharding  # noqa: E402
from retext_jax.models import bert, pretrained  # noqa: E402
from retext_jax.models.retext import BACKBONE_KEYS, ReText, ReTextConfig  # noqa: E402
from retext_jax.train_step import create_state, make_train_step  # noqa: E402


def build(config, num_classes: int, dtype: str):
  lc = config.loss
  vit_cfg, _ = pretrained.image_encoder(config.model, config.input.image_size, "")
  text_cfg = None
  if lc.lambda_iam > 0 or lc.lambda_rec > 0:
    if config.init.text == "minilm":
      _, text_cfg = bert.convert_checkpoint(pretrained.minilm_path())
    else:  # BERT-base-uncased shapes; the weights do not matter for timing
      text_cfg = bert.BertConfig()
  n = vit_cfg.num_patches
  mcfg = ReTextConfig(vit=vit_cfg, text=text_cfg, num_classes=num_classes,
                      embed_dim=config.model.embed_dim, use_rec=lc.lambda_rec > 0,
                      decoder_width=config.model.decoder_width,
                      decoder_depth=config.model.decoder_depth,
                      decoder_heads=config.model.decoder_heads,
                      num_masked=int(round(config.input.mask_ratio * n)))
  return ReText(mcfg, dtype=jnp.dtype(dtype))


def batch(config, model: ReText, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  inp = config.input
  h, w = inp.image_size
  p, k, b, length = inp.multicam_p, inp.multicam_k, inp.singlecam_batch_size, inp.max_text_len
  n, m = model.config.vit.num_patches, model.config.num_masked
  mask = np.stack([rng.permutation(n) < m for _ in range(b)])
  return {
      "multicam/image": rng.normal(size=(p * k, h, w, 3)).astype(np.float32),
      "multicam/pid": np.repeat(np.arange(p), k).astype(np.int32),
      "multicam/camid": np.tile(np.arange(k), p).astype(np.int32),
      "singlecam/view1": rng.normal(size=(b, h, w, 3)).astype(np.float32),
      "singlecam/view2": rng.normal(size=(b, h, w, 3)).astype(np.float32),
      "singlecam/pid": (np.arange(b) // 2).astype(np.int32),
      "singlecam/tokens": rng.integers(1000, 2000, (b, length)).astype(np.int32),
      "singlecam/token_mask": np.ones((b, length), np.int32),
      "singlecam/patch_mask": mask,
  }


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--preset", default="demo", choices=["demo", "tiny", "paper"])
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--num-classes", type=int, default=180)
  ap.add_argument("--peak-tflops", type=float, default=0.0)
  args = ap.parse_args()
  config = retext_config.get_config(args.preset)
  model = build(config, args.num_classes, args.dtype)
  tx, scheds = optim.make_optimizer(config.optim, config.total_steps, BACKBONE_KEYS)
  mesh = sharding.make_mesh()
  host = batch(config, model)

  def init():
    h, w = config.input.image_size
    n = model.config.vit.num_patches
    pm = jnp.zeros((2, n), bool).at[:, : model.config.num_masked].set(True)
    tok = jnp.ones((2, config.input.max_text_len), jnp.int32)
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                           jnp.zeros((2, h, w, 3)), tok, tok, pm)
    return create_state(model, tx, variables, jax.random.key(1))

  shardings = sharding.state_shardings(jax.eval_shape(init), mesh, fsdp=config.mesh.fsdp)
  with jax.set_mesh(mesh):
    state = jax.jit(init, out_shardings=shardings)()
  step = jax.jit(make_train_step(model, tx, config.loss, scheds, model.config.vit.patch_size),
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
      "preset": args.preset, "dtype": args.dtype, "device": str(jax.devices()[0].device_kind),
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
  out = os.path.join(ROOT, "benchmarks", "results", f"train_step_{args.preset}.json")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump(row, f, indent=2)


if __name__ == "__main__":
  main()
