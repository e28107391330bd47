"""Training-free baselines on the synthetic benchmark: how hard is each Market-layout domain?

The demo target domain must not saturate: a colour histogram should be clearly imperfect while an
oracle that knows the visible attributes stays near perfect (identities are distinguishable).

  python benchmarks/synthetic_baselines.py --root /tmp/synthetic_demo [--render]

Prints a table and writes JSON (default benchmarks/results/synthetic_baselines.json).
Protocol (Market-1501): cosine similarity; for each query, gallery images of the same id AND
same camera are ignored, junk (-1) images are not read, distractors (0000) stay in the gallery.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from input_pipeline.registry import get_dataset  # noqa: E402
from input_pipeline.synthetic import render_benchmark  # noqa: E402
from input_pipeline.synthetic.captions import mentioned_colours  # noqa: E402
from retext_jax.evaluators import raw_pixels  # noqa: E402


def _load(paths: list[str]) -> np.ndarray:
  return np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0 for p in paths])


def colour_histogram(images: np.ndarray, stripes: int = 1, bins: int = 8) -> np.ndarray:
  """Joint RGB histogram (bins³ per stripe) over `stripes` horizontal bands, sqrt-normalised."""
  n, h = images.shape[:2]
  q = np.minimum((images * bins).astype(np.int64), bins - 1)
  code = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
  feats = []
  for s in range(stripes):
    band = code[:, s * h // stripes:(s + 1) * h // stripes].reshape(n, -1)
    hist = np.stack([np.bincount(b, minlength=bins**3) for b in band]).astype(np.float32)
    feats.append(np.sqrt(hist / hist.sum(1, keepdims=True)))
  return np.concatenate(feats, 1)


def attribute_oracle(paths: list[str], root: str) -> np.ndarray:
  """One-hot visible attributes from the generator's sidecar (zeros for distractors)."""
  with open(os.path.join(root, "identities.json")) as f:
    side = json.load(f)
  from input_pipeline.synthetic.attributes import Identity, visible_attributes

  rows, vocab = [], {}
  for p in paths:
    rel = os.path.relpath(p, root)
    info = side["images"][rel]
    if info["pid"] in ("0000", "-1"):
      rows.append({})
      continue
    ident = Identity(**side["identities"][info["pid"]]["attributes"])
    vis = visible_attributes(ident, info["view"])
    vis.pop("view")
    words = {f"{k}={v}" for k, v in vis.items()} | {f"colour={c}" for c in mentioned_colours(vis)}
    words |= {f"w={round(ident.width, 1)}", f"h={round(ident.height, 2)}"}
    rows.append({w: 1.0 for w in words})
    for w in words:
      vocab.setdefault(w, len(vocab))
  out = np.zeros((len(paths), len(vocab)), np.float32)
  for i, r in enumerate(rows):
    for w in r:
      out[i, vocab[w]] = 1.0
  return out


def market_eval(qf: np.ndarray, gf: np.ndarray, q_pid: np.ndarray, g_pid: np.ndarray,
                q_cam: np.ndarray, g_cam: np.ndarray, ranks: tuple[int, ...] = (1, 5, 10)
                ) -> dict[str, float]:
  """CMC and mAP with the Market protocol (same id + same camera removed per query)."""
  def norm(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

  sim = norm(qf) @ norm(gf).T
  cmc = np.zeros(max(ranks))
  aps, valid = [], 0
  for i in range(len(qf)):
    keep = ~((g_pid == q_pid[i]) & (g_cam == q_cam[i]))
    order = np.argsort(-sim[i, keep], kind="stable")
    match = (g_pid[keep] == q_pid[i])[order]
    if not match.any():
      continue
    valid += 1
    first = int(np.argmax(match))
    if first < len(cmc):
      cmc[first:] += 1
    hits = np.cumsum(match)
    aps.append(float(np.mean(hits[match] / (np.flatnonzero(match) + 1))))
  out = {f"R{r}": 100.0 * cmc[r - 1] / valid for r in ranks}
  out["mAP"] = 100.0 * float(np.mean(aps))
  return out


def evaluate_domain(root: str) -> dict[str, dict[str, float]]:
  ds = get_dataset("market1501", root)
  q_paths, g_paths = [r.path for r in ds.query], [r.path for r in ds.gallery]
  q_img, g_img = _load(q_paths), _load(g_paths)
  meta = [np.array([r.pid for r in recs]) for recs in (ds.query, ds.gallery)]
  cams = [np.array([r.camid for r in recs]) for recs in (ds.query, ds.gallery)]
  features = {
      "colour histogram (global)": lambda im, _: colour_histogram(im, 1),
      "colour histogram (6 stripes)": lambda im, _: colour_histogram(im, 6),
      "colour histogram (centre half)": lambda im, _: colour_histogram(im[:, :, 32:96], 6),
      # the same feature the trainer scores with config.eval.pixel_baseline (its metrics are ours)
      "raw pixels 32x16": lambda _, paths: np.stack([raw_pixels(p) for p in paths]),
      "attribute oracle": lambda _, paths: attribute_oracle(paths, root),
  }
  results = {}
  for name, fn in features.items():
    results[name] = market_eval(fn(q_img, q_paths), fn(g_img, g_paths), meta[0], meta[1],
                                cams[0], cams[1])
  results["_sizes"] = {"query": len(q_paths), "gallery": len(g_paths)}
  return results


def main(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--root", default="/tmp/synthetic_demo", help="a rendered benchmark")
  ap.add_argument("--render", action="store_true", help="render --preset/--seed into --root first")
  ap.add_argument("--preset", default="demo")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results",
                                                 "synthetic_baselines.json"))
  args = ap.parse_args(argv)
  if args.render:
    t = time.perf_counter()
    render_benchmark(args.root, args.preset, args.seed)
    print(f"rendered {args.preset} in {time.perf_counter() - t:.1f} s")
  with open(os.path.join(args.root, "manifest.json")) as f:
    man = json.load(f)
  report = {"preset": man["preset"], "seed": man["seed"], "domains": {}}
  print(f"{'domain':8s} {'feature':30s} {'R1':>6s} {'R5':>6s} {'R10':>6s} {'mAP':>6s}")
  for domain in ("source_market", "target_market"):
    res = evaluate_domain(os.path.join(args.root, domain))
    report["domains"][domain] = res
    for name, m in res.items():
      if not name.startswith("_"):
        print(f"{domain[:6]:8s} {name:30s} {m['R1']:6.1f} {m['R5']:6.1f} "
              f"{m['R10']:6.1f} {m['mAP']:6.1f}")
  os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
  with open(args.json, "w") as f:
    json.dump(report, f, indent=1, sort_keys=True)
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
