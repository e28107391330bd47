"""Evaluation benchmark: MSMT17-sized CMC/mAP/mINP in bounded memory vs the classic loop.

    python benchmarks/evaluation.py                  # full MSMT17 size, ~minutes on 2 cores
    python benchmarks/evaluation.py --scale 0.1      # quick look

Random features with identity structure (3,060 identities, 15 cameras, 11,659 queries x 82,161
gallery, D=768 float32). The classic torchreid-style reference (full distance matrix, per-query
python loop) is timed on a subset of queries and scaled; its memory for the full problem is
reported analytically (distmat float32 + full argsort int64, as torchreid's numpy path holds).
Also times k-reciprocal re-ranking (chunked path) on a 2k x 10k problem. Prints a table and
writes benchmarks/results/evaluation.json.
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

from retext_jax.evaluation import evaluate_features, k_reciprocal_rerank  # noqa: E402
from retext_jax.evaluation.ranking import chunk_rows, pairwise_distance  # noqa: E402


def make_problem(num_q, num_g, num_ids, num_cams, dim, seed=0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(num_ids, dim)).astype(np.float32)
  g_pids = np.concatenate([np.arange(num_ids), rng.integers(0, num_ids, num_g - num_ids)])
  q_pids = rng.integers(0, num_ids, num_q)
  g_cams = rng.integers(0, num_cams, num_g)
  q_cams = rng.integers(0, num_cams, num_q)
  noise = 2.5  # cos(same id) ~ 0.14 vs spread ~ 0.036 over D=768: a non-trivial ranking
  g = centers[g_pids] + noise * rng.standard_normal((num_g, dim), dtype=np.float32)
  q = centers[q_pids] + noise * rng.standard_normal((num_q, dim), dtype=np.float32)
  return q, g, q_pids, g_pids, q_cams, g_cams


def classic_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
  """The torchreid/fast-reid python reference: argsort everything, then a loop per query."""
  indices = np.argsort(distmat, axis=1, kind="stable")
  matches = (g_pids[indices] == q_pids[:, None]).astype(np.int32)
  aps, inps, cmcs = [], [], []
  for i in range(distmat.shape[0]):
    order = indices[i]
    keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
    raw = matches[i][keep]
    if not raw.any():
      continue
    cmc = raw.cumsum()
    cmcs.append(np.minimum(cmc, 1)[:max_rank])
    last = np.nonzero(raw)[0].max()
    inps.append(cmc[last] / (last + 1.0))
    prec = cmc / (np.arange(len(raw)) + 1.0)
    aps.append((prec * raw).sum() / raw.sum())
  return float(np.mean(aps)), float(np.mean(inps))


def measure(fn):
  tracemalloc.start()
  t0 = time.perf_counter()
  out = fn()
  secs = time.perf_counter() - t0
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  return out, secs, peak


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--scale", type=float, default=1.0, help="fraction of MSMT17 counts")
  parser.add_argument("--dim", type=int, default=768)
  parser.add_argument("--budget_mib", type=int, default=512, help="evaluation working set")
  parser.add_argument("--classic_queries", type=int, default=200)
  parser.add_argument("--rerank_q", type=int, default=2000)
  parser.add_argument("--rerank_g", type=int, default=10000)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                    "evaluation.json"))
  args = parser.parse_args()

  nq, ng = int(11659 * args.scale), int(82161 * args.scale)
  num_ids = max(10, int(3060 * args.scale))
  q, g, qp, gp, qc, gc = make_problem(nq, ng, num_ids, 15, args.dim)
  budget = args.budget_mib * 2**20
  res, secs, peak = measure(
      lambda: evaluate_features(q, g, qp, gp, qc, gc, max_rank=50, metric="cosine",
                                memory_budget_bytes=budget))
  rows = [{
      "name": "evaluate_features (chunked numpy)",
      "queries": nq, "gallery": ng, "seconds": secs,
      "tracemalloc_peak_gib": peak / 2**30,
      "chunk_rows": chunk_rows(ng, budget),
      "R1": float(res["cmc"][0]), "mAP": res["mAP"], "mINP": res["mINP"],
  }]

  nsub = min(args.classic_queries, nq)
  sub = slice(0, nsub)

  def classic_subset():
    dist = pairwise_distance(q[sub], g, "cosine")
    return classic_loop(dist, qp[sub], gp, qc[sub], gc, 50)

  (ap_c, inp_c), secs_c, peak_c = measure(classic_subset)
  check = evaluate_features(q[sub], g, qp[sub], gp, qc[sub], gc, max_rank=50)
  assert abs(check["mAP"] - ap_c) < 1e-6 and abs(check["mINP"] - inp_c) < 1e-6
  full_classic_bytes = nq * ng * (4 + 8 + 4)  # distmat f32 + argsort int64 + matches int32
  rows.append({
      "name": f"classic loop ({nsub} queries, scaled to {nq})",
      "queries": nq, "gallery": ng, "seconds": secs_c * nq / nsub,
      "tracemalloc_peak_gib": full_classic_bytes / 2**30,
      "note": "memory: analytic for the full problem; time: measured subset x Q/subset",
  })

  rerank_scale = min(1.0, args.scale * 10)
  rq, rg = int(args.rerank_q * rerank_scale), int(args.rerank_g * rerank_scale)
  rq_f, rg_f, *_ = make_problem(rq, rg, max(10, rg // 27), 15, args.dim, seed=1)
  _, secs_r, peak_r = measure(
      lambda: k_reciprocal_rerank(rq_f, rg_f, k1=20, k2=6, lambda_value=0.3, metric="cosine",
                                  dense_threshold=0, chunk_size=256))
  rows.append({
      "name": "k_reciprocal_rerank (chunked, k1=20 k2=6)",
      "queries": rq, "gallery": rg, "seconds": secs_r, "tracemalloc_peak_gib": peak_r / 2**30,
      "dense_n2_float32_gib": (rq + rg) ** 2 * 4 / 2**30,
  })

  maxrss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f"{'benchmark':48s} {'Q':>7s} {'G':>7s} {'seconds':>9s} {'peak GiB':>9s}")
  for r in rows:
    print(f"{r['name']:48s} {r['queries']:7d} {r['gallery']:7d} {r['seconds']:9.1f} "
          f"{r['tracemalloc_peak_gib']:9.2f}")
  print(f"process ru_maxrss: {maxrss_gib:.2f} GiB (includes features and the Python runtime)")
  print(f"metrics: R1={rows[0]['R1']:.4f} mAP={rows[0]['mAP']:.4f} mINP={rows[0]['mINP']:.4f}")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "numpy": np.__version__},
        "dim": args.dim, "budget_mib": args.budget_mib, "ru_maxrss_gib": maxrss_gib,
        "rows": rows,
    }, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
