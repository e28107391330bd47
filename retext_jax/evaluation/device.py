"""Re-ID evaluation on the accelerator: jitted distances + ranking per query chunk (JAX).

Two modes:
- `mode="sort"` (exact CMC, mAP, mINP): a stable full sort of each [chunk, G] block on device.
  mAP and mINP need the rank of EVERY true match, and a true match can sit anywhere in the
  gallery, so a top-k list alone cannot give them unless k reaches the last true match.
- `mode="topk"` (CMC only): `jax.lax.top_k(-dist, max_rank)`, the cheap path for rank-k curves
  on very large galleries; mAP/mINP are returned as None.
`metric`: "cosine" or "euclidean" (Re-ID), "dot" (text-to-image: the inner product of
L2-normalised embeddings, ranked descending). Same protocol and tie order as
`ranking.evaluate_rank` (junk entries moved to +inf; equal distances rank by gallery index:
stable sort / top_k's lower-index-first rule); AP is summed in float32 (agrees to ~1e-8).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from retext_jax import errors
from retext_jax.evaluation.ranking import _check_lengths
from retext_jax.linalg import l2_normalize


def _distance(q: jax.Array, g: jax.Array, metric: str) -> jax.Array:
  if metric == "dot":  # similarity of L2-normalised embeddings, ranked descending
    return -(q @ g.T)
  if metric == "cosine":
    return 1.0 - l2_normalize(q) @ l2_normalize(g).T
  sq = jnp.sum(q * q, axis=1)[:, None] + jnp.sum(g * g, axis=1)[None, :] - 2.0 * q @ g.T
  return jnp.maximum(sq, 0.0)


@functools.partial(jax.jit, static_argnames=("metric", "mode", "max_rank", "use_cams"))
def _chunk_stats(q, g, qp, gp, qc, gc, *, metric, mode, max_rank, use_cams):
  dist = _distance(q, g, metric)
  same = gp[None, :] == qp[:, None]
  if use_cams:
    junk = same & (gc[None, :] == qc[:, None]) & (qc[:, None] >= 0)  # -1: camera unknown
    good = same & ~junk
    dist = jnp.where(junk, jnp.inf, dist)
  else:
    good = same
  num_rel = jnp.sum(good, axis=1)
  if mode == "topk":
    _, idx = jax.lax.top_k(-dist, max_rank)
    hits = jnp.take_along_axis(good, idx, axis=1)
    first = jnp.where(jnp.any(hits, axis=1), jnp.argmax(hits, axis=1), max_rank)
    return num_rel, first, jnp.zeros_like(dist[:, 0]), jnp.zeros_like(dist[:, 0])
  order = jnp.argsort(dist, axis=1, stable=True)
  hits = jnp.take_along_axis(good, order, axis=1)
  ranks = jnp.arange(1, dist.shape[1] + 1, dtype=jnp.float32)
  cum = jnp.cumsum(hits, axis=1)
  ap = jnp.sum(jnp.where(hits, cum / ranks, 0.0), axis=1) / jnp.maximum(num_rel, 1)
  first = jnp.argmax(hits, axis=1)
  last = dist.shape[1] - 1 - jnp.argmax(hits[:, ::-1], axis=1)
  inp = num_rel / (last + 1.0)
  return num_rel, first, ap, inp


def evaluate_features_jax(
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray | None,
    g_camids: np.ndarray | None,
    max_rank: int = 50,
    metric: str = "cosine",
    chunk_size: int = 256,
    mode: str = "sort",
) -> dict:
  """CMC / mAP / mINP with distances and ranking on the default JAX device, chunk by chunk.

  The gallery stays on device; each query chunk is padded to `chunk_size` (one compilation).
  """
  if mode not in ("sort", "topk"):
    raise errors.ConfigError(f"evaluate_features_jax: mode must be 'sort' or 'topk', got {mode!r}.")
  if metric not in ("cosine", "euclidean", "dot"):
    raise errors.ConfigError(f"evaluate_features_jax: unknown metric {metric!r}.")
  nq, ng = len(q_feats), len(g_feats)
  q_pids = _check_lengths("q_pids", q_pids, nq)
  g_pids = _check_lengths("g_pids", g_pids, ng)
  use_cams = q_camids is not None
  if use_cams != (g_camids is not None):
    raise errors.ConfigError("evaluate_features_jax: pass both q_camids and g_camids, or neither.")
  q_cams = _check_lengths("q_camids", q_camids, nq) if use_cams else np.zeros(nq, np.int32)
  g_cams = _check_lengths("g_camids", g_camids, ng) if use_cams else np.zeros(ng, np.int32)
  max_rank = min(max_rank, ng)
  g = jnp.asarray(g_feats, jnp.float32)
  gp, gc = jnp.asarray(g_pids), jnp.asarray(g_cams)
  q = np.asarray(q_feats, np.float32)
  stats = []
  for s in range(0, nq, chunk_size):
    n = min(chunk_size, nq - s)
    pad = chunk_size - n
    qs = np.pad(q[s : s + n], ((0, pad), (0, 0)))
    qp = np.pad(q_pids[s : s + n], (0, pad))
    qc = np.pad(q_cams[s : s + n], (0, pad))
    out = _chunk_stats(jnp.asarray(qs), g, jnp.asarray(qp), gp, jnp.asarray(qc), gc,
                       metric=metric, mode=mode, max_rank=max_rank, use_cams=use_cams)
    stats.append([np.asarray(x)[:n] for x in out])
  num_rel, first, ap, inp = (np.concatenate(x) for x in zip(*stats, strict=True))
  valid = num_rel > 0
  num_valid = int(valid.sum())
  if num_valid == 0:
    raise errors.DataError("evaluate_features_jax: no query has a true match in the gallery.")
  counts = np.bincount(np.minimum(first[valid], max_rank), minlength=max_rank + 1)
  result = {
      "cmc": np.cumsum(counts[:max_rank]) / num_valid,
      "mAP": float(np.mean(ap[valid].astype(np.float64))) if mode == "sort" else None,
      "mINP": float(np.mean(inp[valid].astype(np.float64))) if mode == "sort" else None,
      "num_valid_queries": num_valid,
  }
  return result
