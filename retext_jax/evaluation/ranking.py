"""Re-ID and text-to-image retrieval metrics: CMC, mAP, mINP, vectorised and chunked (numpy).

Protocol (Market-1501 / MSMT17, as torchreid and fast-reid): for each query, gallery images of
the same identity AND the same camera are removed; queries left without a true match are skipped;
CMC@k = fraction of valid queries whose first true match is within rank k; AP = mean over true
matches of the precision at that match; INP = (#true matches) / (rank of the last true match)
(Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook").

Ties: the ranking of a query is `np.argsort(dist_row, kind="stable")` of the distances as given,
so equal distances rank by gallery index. The vectorised code reproduces that order exactly:
removed (junk) entries are moved to +inf, which leaves the stable order of the kept entries
unchanged. Distances must therefore be finite.

Memory: one chunk of queries at a time holds a [chunk, G] float32 distance block, its int64
argsort and a few boolean masks (~22 bytes per element); `chunk_size` defaults from
`memory_budget_bytes`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from retext_jax import errors
from retext_jax.linalg import l2_normalize

_BYTES_PER_ELEMENT = 22  # float32 dist + int64 order + bools + gathers, per (query, gallery) pair


def _check_lengths(name: str, arr: np.ndarray, n: int) -> np.ndarray:
  arr = np.asarray(arr)
  if arr.ndim != 1 or arr.shape[0] != n:
    raise errors.DataError(f"{name}: expected shape ({n},), got {arr.shape}.")
  return arr


def chunk_rows(num_gallery: int, memory_budget_bytes: int = 512 * 2**20) -> int:
  """Queries per chunk so that one chunk's working set stays within the budget."""
  return max(1, int(memory_budget_bytes // (_BYTES_PER_ELEMENT * max(num_gallery, 1))))


def pairwise_distance(
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    metric: str = "cosine",
    chunk: int = 4096,
) -> np.ndarray:
  """[Q, G] float32 distances, computed in query chunks to bound temporaries.

  cosine: 1 - <q/|q|, g/|g|> (features L2-normalised first); euclidean: squared Euclidean
  |q|^2 + |g|^2 - 2 q.g clipped at 0 (torchreid's `euclidean_squared_distance`, same ranking).
  """
  q = np.asarray(q_feats, np.float32)
  g = np.asarray(g_feats, np.float32)
  out = np.empty((q.shape[0], g.shape[0]), np.float32)
  for start, dist in iter_distance_chunks(q, g, metric, chunk):
    out[start : start + dist.shape[0]] = dist
  return out


def iter_distance_chunks(
    q_feats: np.ndarray, g_feats: np.ndarray, metric: str, chunk: int
) -> Iterator[tuple[int, np.ndarray]]:
  """Yields (first query row, [rows, G] float32 distance block) over query chunks."""
  if metric not in ("cosine", "euclidean"):
    raise errors.ConfigError(
        f"pairwise_distance: metric must be 'cosine' or 'euclidean', got {metric!r}.")
  q = np.asarray(q_feats, np.float32)
  g = np.asarray(g_feats, np.float32)
  if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
    raise errors.DataError(
        f"pairwise_distance: feature shapes {q.shape} and {g.shape} do not match.")
  if metric == "cosine":
    g = l2_normalize(g)
  else:
    g_sq = np.sum(g * g, axis=1)
  for start in range(0, q.shape[0], chunk):
    qc = q[start : start + chunk]
    if metric == "cosine":
      dist = l2_normalize(qc) @ g.T
      np.subtract(1.0, dist, out=dist)
    else:
      dist = qc @ g.T
      dist *= -2.0
      dist += np.sum(qc * qc, axis=1)[:, None]
      dist += g_sq[None, :]
      np.maximum(dist, 0.0, out=dist)
    yield start, dist


def _rank_chunk(
    dist: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray | None,
    g_camids: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Per-query (valid, first-match rank (0-based), AP, INP) for one [c, G] distance block."""
  if not np.all(np.isfinite(dist)):
    raise errors.DataError("evaluate_rank: distances must be finite (got NaN or inf).")
  c = dist.shape[0]
  same_pid = g_pids[None, :] == q_pids[:, None]
  if q_camids is not None:
    junk = same_pid & (g_camids[None, :] == q_camids[:, None])
    good = same_pid & ~junk
    if junk.any():
      dist = np.where(junk, np.inf, dist)
  else:
    good = same_pid
  order = np.argsort(dist, axis=1, kind="stable")
  good_sorted = np.take_along_axis(good, order, axis=1)
  num_rel = good_sorted.sum(axis=1)
  valid = num_rel > 0
  rows, cols = np.nonzero(good_sorted)  # row-major: cols ascend within a row
  row_start = np.zeros(c + 1, np.int64)
  np.cumsum(num_rel, out=row_start[1:])
  hit_number = np.arange(rows.shape[0]) - row_start[rows] + 1  # k-th true match of its row
  precision = hit_number / (cols + 1.0)
  ap = np.bincount(rows, weights=precision, minlength=c)
  ap = np.divide(ap, num_rel, out=np.zeros(c), where=valid)
  first = np.full(c, np.iinfo(np.int64).max)
  last = np.zeros(c, np.int64)
  first[valid] = cols[row_start[:-1][valid]]
  last[valid] = cols[row_start[1:][valid] - 1]
  inp = np.divide(num_rel, last + 1.0, out=np.zeros(c), where=valid)
  return valid, first, ap, inp


class _Accumulator:
  """Collects per-query results of every chunk and reduces them to the metric dict."""

  def __init__(self, max_rank: int):
    self.max_rank = max_rank
    self.valid, self.first, self.ap, self.inp = [], [], [], []

  def add(self, valid, first, ap, inp) -> None:
    self.valid.append(valid)
    self.first.append(first[valid])
    self.ap.append(ap[valid])
    self.inp.append(inp[valid])

  def result(self) -> dict:
    valid = np.concatenate(self.valid) if self.valid else np.zeros(0, bool)
    num_valid = int(valid.sum())
    if num_valid == 0:
      raise errors.DataError("evaluate_rank: no query has a true match in the gallery.")
    first = np.concatenate(self.first)
    counts = np.bincount(np.minimum(first, self.max_rank), minlength=self.max_rank + 1)
    cmc = np.cumsum(counts[: self.max_rank]) / num_valid
    return {
        "cmc": cmc.astype(np.float64),
        "mAP": float(np.mean(np.concatenate(self.ap))),
        "mINP": float(np.mean(np.concatenate(self.inp))),
        "num_valid_queries": num_valid,
    }


def evaluate_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray | None,
    g_camids: np.ndarray | None,
    max_rank: int = 50,
    chunk_size: int | None = None,
) -> dict:
  """CMC[max_rank], mAP, mINP and the number of valid queries from a [Q, G] distance matrix.

  Passing `q_camids=g_camids=None` disables the same-camera filtering (text-to-image protocol).
  CMC has min(max_rank, G) entries; metrics are fractions in [0, 1].
  """
  distmat = np.asarray(distmat)
  if distmat.ndim != 2:
    raise errors.DataError(f"evaluate_rank: distmat must be 2-D, got shape {distmat.shape}.")
  nq, ng = distmat.shape
  chunk = chunk_size or chunk_rows(ng)
  chunks = ((s, distmat[s:s + chunk]) for s in range(0, nq, chunk))
  return _rank_all(chunks, nq, ng, q_pids, g_pids, q_camids, g_camids, max_rank,
                   "evaluate_rank")


def _rank_all(chunks, nq: int, ng: int, q_pids, g_pids, q_camids, g_camids, max_rank: int,
              who: str) -> dict:
  """Checks the id arrays, then accumulates metrics over (first query row, distances) chunks."""
  q_pids = _check_lengths("q_pids", q_pids, nq)
  g_pids = _check_lengths("g_pids", g_pids, ng)
  if (q_camids is None) != (g_camids is None):
    raise errors.ConfigError(f"{who}: pass both q_camids and g_camids, or neither.")
  if q_camids is not None:
    q_camids = _check_lengths("q_camids", q_camids, nq)
    g_camids = _check_lengths("g_camids", g_camids, ng)
  acc = _Accumulator(min(max_rank, ng))
  for s, dist in chunks:
    sl = slice(s, s + dist.shape[0])
    acc.add(*_rank_chunk(dist, q_pids[sl], g_pids,
                         None if q_camids is None else q_camids[sl], g_camids))
  return acc.result()


def evaluate_features(
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray | None,
    g_camids: np.ndarray | None,
    max_rank: int = 50,
    metric: str = "cosine",
    chunk_size: int | None = None,
    memory_budget_bytes: int = 512 * 2**20,
) -> dict:
  """`evaluate_rank` from features, computing distances chunk by chunk (never the full matrix).

  Scales to MSMT17 (11,659 x 82,161) within `memory_budget_bytes` plus the features.
  """
  nq, ng = len(q_feats), len(g_feats)
  chunk = chunk_size or chunk_rows(ng, memory_budget_bytes)
  chunks = iter_distance_chunks(q_feats, g_feats, metric, chunk)
  return _rank_all(chunks, nq, ng, q_pids, g_pids, q_camids, g_camids, max_rank,
                   "evaluate_features")


def evaluate_text_to_image(
    sim_or_dist: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    max_rank: int = 10,
    similarity: bool = True,
    chunk_size: int | None = None,
) -> dict:
  """IRRA's text-to-image protocol: every caption a query, every test image in the gallery.

  No camera filtering. `similarity=True` ranks by descending score (IRRA's cosine similarity).
  Returns fractions: R1, R5, R10 (those <= max_rank), mAP, mINP, num_valid_queries, cmc.
  CMC has min(max_rank, G) entries.
  """
  scores = np.asarray(sim_or_dist)
  dist = -scores if similarity else scores
  out = evaluate_rank(dist, q_pids, g_pids, None, None, max_rank=max_rank, chunk_size=chunk_size)
  # A gallery shorter than k: every query's match is within rank k, so R@k = R@G.
  cmc = out["cmc"]
  result = {f"R{k}": float(cmc[min(k, len(cmc)) - 1]) for k in (1, 5, 10) if k <= max_rank}
  result.update(out)
  return result
