"""Evaluation benchmark: CMC/mAP/mINP and re-ranking, ours beside the classic implementations.

    python benchmarks/evaluation.py                 # ~6 minutes on 2 cores, ~9 GB peak (rerank)
    python benchmarks/evaluation.py --quick         # small sizes, seconds
    python benchmarks/evaluation.py --device        # full MSMT17 size on the JAX device path

Three parts, each timed in this one run on random features with identity structure (D=768,
15 cameras, ~27 gallery images per identity, as in MSMT17):
1. The same MSMT17-like distance matrix (half size: 5,829 x 41,080) ranked by ours
   (`evaluate_rank`, default threads and one thread) and by the classic per-query loop (a stable
   argsort of each row, then the torchreid / fast-reid metric code); every metric must agree to
   1e-6. torchreid's Cython evaluator takes about 0.6x the loop's time on such matrices.
2. The full MSMT17 size (11,659 x 82,161) from features with `evaluate_features`: seconds and
   peak memory (tracemalloc: every numpy buffer, all threads).
3. k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3) of a demo-sized and a Market-1501-sized
   problem: ours (`k_reciprocal_rerank`) beside the classic dense numpy algorithm laid out as
   torchreid's `re_ranking` (N x N float32 distances, an int32 argsort of all of it, a dense
   N x N weight matrix, an inverted index); seconds, peak memory and the largest difference.
With --device, only part 2 runs, through `evaluation.device.evaluate_features_jax` on the
default JAX backend (the path the trainer takes on an accelerator), checked against numpy on
the first 500 queries. Prints a table and writes benchmarks/results/evaluation[_device].json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from retext_jax.evaluation import (  # noqa: E402
    evaluate_features,
    evaluate_rank,
    k_reciprocal_rerank,
    pairwise_distance,
)
from retext_jax.evaluation.ranking import default_workers  # noqa: E402

MSMT17 = (11659, 82161, 3060)  # queries, gallery, test identities
MARKET = (3368, 15913, 751)


def make_problem(num_q, num_g, num_ids, num_cams, dim, seed=0):
  """Features around identity centres: cos(same id) ~ 0.14 against a spread of ~0.036 at
  D=768, so the ranking is neither trivial nor random."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(num_ids, dim)).astype(np.float32)
  g_pids = np.concatenate([np.arange(num_ids), rng.integers(0, num_ids, num_g - num_ids)])
  q_pids = rng.integers(0, num_ids, num_q)
  g_cams = rng.integers(0, num_cams, num_g)
  q_cams = rng.integers(0, num_cams, num_q)
  noise = 2.5
  g = centers[g_pids] + noise * rng.standard_normal((num_g, dim), dtype=np.float32)
  q = centers[q_pids] + noise * rng.standard_normal((num_q, dim), dtype=np.float32)
  return q, g, q_pids, g_pids, q_cams, g_cams


def per_query_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
  """The classic evaluator: per query a stable argsort of its row, junk removed, then CMC, AP
  and INP from the cumulative matches (torchreid's / fast-reid's numpy code path)."""
  cmcs, aps, inps = [], [], []
  for i in range(distmat.shape[0]):
    order = np.argsort(distmat[i], kind="stable")
    same = g_pids[order] == q_pids[i]
    raw = same[~(same & (g_camids[order] == q_camids[i]))]
    if not raw.any():
      continue
    hits = raw.cumsum()
    cmcs.append(np.minimum(hits[:max_rank], 1))
    last = np.flatnonzero(raw)[-1]
    inps.append(hits[last] / (last + 1.0))
    aps.append((hits / np.arange(1.0, len(raw) + 1) * raw).sum() / raw.sum())
  return {"cmc": np.mean(cmcs, axis=0), "mAP": float(np.mean(aps)),
          "mINP": float(np.mean(inps)), "num_valid_queries": len(aps)}


def classic_re_ranking(q_g, q_q, g_g, k1, k2, lam):
  """Zhong et al.'s k-reciprocal re-ranking in the classic dense layout (torchreid's
  `re_ranking`): everything as N x N arrays, python loops over rows."""
  dist = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32) ** 2
  dist = (dist / dist.max(axis=1, keepdims=True)).astype(np.float32)
  n, nq = dist.shape[0], q_g.shape[0]
  rank = np.argsort(dist, axis=1).astype(np.int32)
  half = int(np.around(k1 / 2.0))

  def reciprocal(i, k):
    forward = rank[i, : k + 1]
    return forward[np.any(rank[forward, : k + 1] == i, axis=1)]

  weights = np.zeros((n, n), np.float32)
  for i in range(n):
    r = reciprocal(i, k1)
    expansion = [r]
    for c in r:
      rc = reciprocal(c, half)
      if len(np.intersect1d(rc, r)) > 2.0 / 3.0 * len(rc):
        expansion.append(rc)
    idx = np.unique(np.concatenate(expansion))
    w = np.exp(-dist[i, idx])
    weights[i, idx] = w / w.sum()
  if k2 != 1:
    weights = np.stack([weights[rank[i, :k2]].mean(axis=0) for i in range(n)])
  holders = [np.flatnonzero(weights[:, j]) for j in range(n)]  # inverted index
  out = np.empty((nq, n - nq), np.float32)
  for i in range(nq):
    shared = np.zeros(n, np.float32)
    for j in np.flatnonzero(weights[i]):
      shared[holders[j]] += np.minimum(weights[i, j], weights[holders[j], j])
    jaccard = 1.0 - shared / (2.0 - shared)
    out[i] = (jaccard * (1.0 - lam) + dist[i] * lam)[nq:]
  return out


def measure(fn):
  """(result, seconds, tracemalloc peak bytes)."""
  tracemalloc.start()
  t0 = time.perf_counter()
  out = fn()
  secs = time.perf_counter() - t0
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  return out, secs, peak


def _max_metric_gap(a: dict, b: dict) -> float:
  assert a["num_valid_queries"] == b["num_valid_queries"]
  return max(float(np.max(np.abs(a["cmc"] - b["cmc"]))), abs(a["mAP"] - b["mAP"]),
             abs(a["mINP"] - b["mINP"]))


def same_matrix(scale: float, dim: int) -> list[dict]:
  nq, ng, ids = (max(20, int(x * scale)) for x in MSMT17)
  q, g, qp, gp, qc, gc = make_problem(nq, ng, ids, 15, dim)
  dist = pairwise_distance(q, g, "cosine")
  del q, g
  loop, secs_loop, _ = measure(lambda: per_query_loop(dist, qp, gp, qc, gc, 50))
  rows = [{"part": "rank", "name": "classic per-query loop (stable argsort per row)",
           "queries": nq, "gallery": ng, "seconds": secs_loop, "peak_gib": None,
           "ratio_to_loop": 1.0, "max_metric_gap": 0.0}]
  for workers in (default_workers(), 1):
    res, secs, peak = measure(lambda w=workers: evaluate_rank(dist, qp, gp, qc, gc, 50,
                                                               workers=w))
    gap = _max_metric_gap(res, loop)
    if gap > 1e-6:
      raise SystemExit(f"evaluate_rank differs from the loop by {gap:.2e}")
    rows.append({"part": "rank", "name": f"ours: evaluate_rank ({workers} thread(s))",
                 "queries": nq, "gallery": ng, "seconds": secs, "peak_gib": peak / 2**30,
                 "ratio_to_loop": secs / secs_loop, "max_metric_gap": gap,
                 "R1": float(res["cmc"][0]), "mAP": res["mAP"], "mINP": res["mINP"]})
  return rows


def full_size(scale: float, dim: int) -> dict:
  nq, ng, ids = (max(20, int(x * scale)) for x in MSMT17)
  q, g, qp, gp, qc, gc = make_problem(nq, ng, ids, 15, dim, seed=2)
  res, secs, peak = measure(lambda: evaluate_features(q, g, qp, gp, qc, gc, 50))
  return {"part": "features", "name": "ours: evaluate_features (from features)",
          "queries": nq, "gallery": ng, "seconds": secs, "peak_gib": peak / 2**30,
          "R1": float(res["cmc"][0]), "mAP": res["mAP"], "mINP": res["mINP"]}


def on_device(scale: float, dim: int) -> list[dict]:
  import jax

  from retext_jax.evaluation.device import evaluate_features_jax

  nq, ng, ids = (max(20, int(x * scale)) for x in MSMT17)
  q, g, qp, gp, qc, gc = make_problem(nq, ng, ids, 15, dim, seed=2)
  sub = slice(0, min(500, nq))
  check = evaluate_features_jax(q[sub], g, qp[sub], gp, qc[sub], gc, 50)  # also compiles
  gap = _max_metric_gap(check, evaluate_features(q[sub], g, qp[sub], gp, qc[sub], gc, 50))
  if gap > 1e-5:
    raise SystemExit(f"the device path differs from numpy by {gap:.2e}")
  t0 = time.perf_counter()
  res = evaluate_features_jax(q, g, qp, gp, qc, gc, 50)
  secs = time.perf_counter() - t0
  return [{"part": "device", "name": f"ours on {jax.devices()[0].device_kind}: "
           "evaluate_features_jax", "queries": nq, "gallery": ng, "seconds": secs,
           "peak_gib": None, "max_metric_gap_500_queries": gap, "R1": float(res["cmc"][0]),
           "mAP": res["mAP"], "mINP": res["mINP"]}]


def rerank(label: str, sizes: tuple[int, int, int], dim: int) -> list[dict]:
  nq, ng, ids = sizes
  q, g, *_ = make_problem(nq, ng, ids, 6, dim, seed=1)
  ours, secs, peak = measure(lambda: k_reciprocal_rerank(q, g, metric="euclidean"))

  def classic():
    pd = lambda a, b: pairwise_distance(a, b, "euclidean")  # noqa: E731
    return classic_re_ranking(pd(q, g), pd(q, q), pd(g, g), 20, 6, 0.3)

  ref, secs_ref, peak_ref = measure(classic)
  gap = float(np.max(np.abs(ours - ref)))
  base = {"part": "rerank", "queries": nq, "gallery": ng}
  return [{**base, "name": f"{label} re-ranking: classic dense numpy", "seconds": secs_ref,
           "peak_gib": peak_ref / 2**30},
          {**base, "name": f"{label} re-ranking: ours (k_reciprocal_rerank)", "seconds": secs,
           "peak_gib": peak / 2**30, "ratio_to_classic": secs / secs_ref, "max_abs_gap": gap}]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
  parser.add_argument("--device", action="store_true", help="the JAX device path only")
  parser.add_argument("--scale", type=float, help="fraction of MSMT17 for the full-size part")
  parser.add_argument("--dim", type=int, default=768)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                    "evaluation.json"))
  args = parser.parse_args()
  rank_scale, full_scale = (0.01, 0.02) if args.quick else (0.5, 1.0)
  full_scale = args.scale or full_scale
  if args.device:
    rows = on_device(full_scale, args.dim)
    if args.out == parser.get_default("out"):
      args.out = args.out.replace("evaluation.json", "evaluation_device.json")
  else:
    market = (40, 190, 9) if args.quick else MARKET
    rows = same_matrix(rank_scale, args.dim)
    rows.append(full_size(full_scale, args.dim))
    rows += rerank("demo-sized", (200, 760, 76), args.dim)
    rows += rerank("Market-sized", market, args.dim)

  def fmt(v, spec):
    return format(v, spec) if v is not None else "-"

  print(f"| {'what':58s} | {'Q x G':>15s} | {'seconds':>8s} | {'peak GiB':>8s} | ratio |")
  print(f"|{'-' * 60}|{'-' * 17}|{'-' * 10}|{'-' * 10}|-------|")
  for r in rows:
    ratio = r.get("ratio_to_loop", r.get("ratio_to_classic"))
    print(f"| {r['name']:58s} | {r['queries']:>6d} x {r['gallery']:<6d} | "
          f"{r['seconds']:8.2f} | {fmt(r['peak_gib'], '8.2f')} | {fmt(ratio, '5.2f')} |")
  if args.device:
    r = rows[0]
    print(f"\n{r['name']}: {r['seconds']:.1f} s; equal to numpy to "
          f"{r['max_metric_gap_500_queries']:.1e} on 500 queries")
  else:
    best = rows[1]
    print(f"\nsame matrix: ours {best['seconds']:.1f} s = {best['ratio_to_loop']:.2f}x the "
          f"loop (target <= 0.3x), metrics equal to {best['max_metric_gap']:.1e}; "
          f"R1 {best['R1']:.4f} mAP {best['mAP']:.4f} mINP {best['mINP']:.4f}")
  for r in rows:
    if "max_abs_gap" in r:
      print(f"{r['name']}: largest difference to the classic algorithm {r['max_abs_gap']:.1e}")
  maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f"process peak RSS {maxrss:.2f} GiB")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"machine": {"cpus": os.cpu_count(), "threads": default_workers(),
                           "platform": platform.platform(), "numpy": np.__version__},
               "dim": args.dim, "quick": args.quick, "ru_maxrss_gib": maxrss, "rows": rows},
              f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
