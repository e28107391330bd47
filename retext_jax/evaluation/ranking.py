"""Re-ID and text-to-image retrieval metrics: CMC, mAP, mINP, vectorised and chunked (numpy).

Protocol (Market-1501 / MSMT17, as torchreid and fast-reid): for each query, gallery images of
the same identity AND the same camera are removed (a camera id of -1 means unknown: nothing is
removed for such a query); queries left without a true match are skipped;
CMC@k = fraction of valid queries whose first true match is within rank k; AP = mean over true
matches of the precision at that match; INP = (#true matches) / (rank of the last true match)
(Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook").

Ties: the ranking of a query is `np.argsort(dist_row, kind="stable")` of the distances as given,
so equal distances rank by gallery index. Removed (junk) entries are moved to +inf, which leaves
the order of the kept entries unchanged; distances must therefore be finite.

Speed: the metrics need only the positions of the true matches. For float32 distances each row
is turned into int64 keys (monotone float bits, then the gallery index) that sort into exactly
the stable order; the keys are sorted in place with numpy's SIMD sort (no argsort, no gathers
of the whole row) and each true match's position is found by binary search. Other dtypes take
a stable argsort. Chunks of
queries run on a thread pool (numpy's sort and BLAS release the GIL).

Memory: each worker holds one chunk: a [chunk, G] float32 distance block, its junk-masked copy,
the int64 keys and a few boolean masks (~22 bytes per element);
`chunk_size` defaults from `memory_budget_bytes` shared by the workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from retext_jax import errors
from retext_jax.linalg import l2_normalize

# float32 dist + masked copy + key copy, int64 keys, bools; per (query, gallery) pair
_BYTES_PER_ELEMENT = 24


def default_workers() -> int:
  """Threads for the ranking: the cores this process may use."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # not Linux
    return max(1, os.cpu_count() or 1)


def _check_lengths(name: str, arr: np.ndarray, n: int) -> np.ndarray:
  arr = np.asarray(arr)
  if arr.ndim != 1 or arr.shape[0] != n:
    raise errors.DataError(f"{name}: expected shape ({n},), got {arr.shape}.")
  return arr


def chunk_rows(num_gallery: int, memory_budget_bytes: int = 512 * 2**20, workers: int = 1
               ) -> int:
  """Queries per chunk so that `workers` chunks' working sets stay within the budget."""
  per_row = _BYTES_PER_ELEMENT * max(num_gallery, 1) * max(workers, 1)
  return max(1, int(memory_budget_bytes // per_row))


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
  q, g, g_sq = _prepare_features(q_feats, g_feats, metric)
  for start in range(0, q.shape[0], chunk):
    yield start, _distance_block(q[start : start + chunk], g, metric, g_sq)


def _prepare_features(q_feats: np.ndarray, g_feats: np.ndarray, metric: str
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """(queries, gallery normalised for cosine, gallery squared norms for euclidean), float32."""
  if metric not in ("cosine", "euclidean"):
    raise errors.ConfigError(
        f"pairwise_distance: metric must be 'cosine' or 'euclidean', got {metric!r}.")
  q = np.asarray(q_feats, np.float32)
  g = np.asarray(g_feats, np.float32)
  if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
    raise errors.DataError(
        f"pairwise_distance: feature shapes {q.shape} and {g.shape} do not match.")
  if metric == "cosine":
    return q, l2_normalize(g), None
  return q, g, np.sum(g * g, axis=1)


def _distance_block(qc: np.ndarray, g: np.ndarray, metric: str, g_sq: np.ndarray | None
                    ) -> np.ndarray:
  """[rows, G] distances of a query block to the prepared gallery (normalised for cosine)."""
  if metric == "cosine":
    dist = l2_normalize(qc) @ g.T
    np.subtract(1.0, dist, out=dist)
    return dist
  dist = qc @ g.T
  dist *= -2.0
  dist += np.sum(qc * qc, axis=1)[:, None]
  dist += g_sq[None, :]
  np.maximum(dist, 0.0, out=dist)
  return dist


def _stable_keys(dist: np.ndarray) -> np.ndarray:
  """int64 keys that sort a float32 row exactly as `np.argsort(row, kind="stable")` orders it:
  the float's bits made monotone (high half) and the gallery index (low half), so that any
  sort, including numpy's unstable SIMD one, gives the stable order."""
  d = dist + np.float32(0)  # a copy; -0.0 becomes +0.0 (the two compare equal)
  bits = d.view(np.int32)
  if d.min() < 0:  # negative floats: their bit patterns order backwards
    bits ^= (bits >> 31) & np.int32(0x7FFFFFFF)
  keys = np.empty(d.shape, np.int64)
  np.copyto(keys, bits, casting="unsafe")
  keys <<= 32
  keys |= np.arange(d.shape[1], dtype=np.int64)
  return keys


def _match_positions(dist: np.ndarray, good: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(row, 0-based position in the row's stable ranking) of every true match, row-major with
  positions ascending. float32 rows are sorted as int64 keys (`_stable_keys`) and each match
  found by binary search; other dtypes take a stable argsort."""
  c, ng = dist.shape
  if dist.dtype != np.float32:
    order = np.argsort(dist, axis=1, kind="stable")
    return np.nonzero(np.take_along_axis(good, order, axis=1))
  rows, idx = np.nonzero(good)
  keys = _stable_keys(dist)
  match_keys = keys[rows, idx]
  keys.sort(axis=1)
  pos = np.empty_like(idx)
  bounds = np.searchsorted(rows, np.arange(c + 1))
  for r in np.flatnonzero(bounds[1:] > bounds[:-1]):
    a, b = bounds[r], bounds[r + 1]
    pos[a:b] = np.searchsorted(keys[r], match_keys[a:b])
  flat = np.sort(rows * ng + pos)
  return flat // ng, flat % ng


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
    junk = same_pid & (g_camids[None, :] == q_camids[:, None]) & (q_camids[:, None] >= 0)
    good = same_pid & ~junk
    if junk.any():
      dist = np.where(junk, dist.dtype.type(np.inf), dist)
  else:
    good = same_pid
  num_rel = good.sum(axis=1)
  valid = num_rel > 0
  rows, cols = _match_positions(dist, good)  # row-major: cols ascend within a row
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
    workers: int | None = None,
) -> dict:
  """CMC[max_rank], mAP, mINP and the number of valid queries from a [Q, G] distance matrix.

  Passing `q_camids=g_camids=None` disables the same-camera filtering (text-to-image protocol).
  CMC has min(max_rank, G) entries; metrics are fractions in [0, 1]. `workers` threads rank
  query chunks in parallel (default: the usable cores).
  """
  distmat = np.asarray(distmat)
  if distmat.ndim != 2:
    raise errors.DataError(f"evaluate_rank: distmat must be 2-D, got shape {distmat.shape}.")
  nq, ng = distmat.shape
  return _rank_all(lambda s, e: distmat[s:e], nq, ng, q_pids, g_pids, q_camids, g_camids,
                   max_rank, chunk_size, 512 * 2**20, workers, "evaluate_rank")


def _rank_all(block: Callable[[int, int], np.ndarray], nq: int, ng: int, q_pids, g_pids,
              q_camids, g_camids, max_rank: int, chunk_size: int | None,
              memory_budget_bytes: int, workers: int | None, who: str) -> dict:
  """Checks the id arrays, then ranks the distance blocks `block(start, stop)` of query chunks
  on a thread pool and reduces their per-query results."""
  q_pids = _check_lengths("q_pids", q_pids, nq)
  g_pids = _check_lengths("g_pids", g_pids, ng)
  if (q_camids is None) != (g_camids is None):
    raise errors.ConfigError(f"{who}: pass both q_camids and g_camids, or neither.")
  if q_camids is not None:
    q_camids = _check_lengths("q_camids", q_camids, nq)
    g_camids = _check_lengths("g_camids", g_camids, ng)
  workers = workers or default_workers()
  chunk = chunk_size or chunk_rows(ng, memory_budget_bytes, workers)

  def rank(start: int):
    stop = min(start + chunk, nq)
    cams = None if q_camids is None else q_camids[start:stop]
    return _rank_chunk(block(start, stop), q_pids[start:stop], g_pids, cams, g_camids)

  starts = range(0, nq, chunk)
  if workers == 1 or len(starts) == 1:
    per_chunk = [rank(s) for s in starts]
  else:
    with ThreadPoolExecutor(min(workers, len(starts))) as pool:
      per_chunk = list(pool.map(rank, starts))
  acc = _Accumulator(min(max_rank, ng))
  for stats in per_chunk:
    acc.add(*stats)
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
    workers: int | None = None,
) -> dict:
  """`evaluate_rank` from features, computing distances chunk by chunk (never the full matrix).

  Scales to MSMT17 (11,659 x 82,161) within `memory_budget_bytes` plus the features.
  """
  q, g, g_sq = _prepare_features(q_feats, g_feats, metric)
  return _rank_all(lambda s, e: _distance_block(q[s:e], g, metric, g_sq), len(q), len(g),
                   q_pids, g_pids, q_camids, g_camids, max_rank, chunk_size,
                   memory_budget_bytes, workers, "evaluate_features")


def evaluate_text_to_image(
    sim_or_dist: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    max_rank: int = 10,
    similarity: bool = True,
    chunk_size: int | None = None,
    workers: int | None = None,
) -> dict:
  """IRRA's text-to-image protocol: every caption a query, every test image in the gallery.

  No camera filtering. `similarity=True` ranks by descending score (IRRA's cosine similarity).
  Returns fractions: R1, R5, R10 (those <= max_rank), mAP, mINP, num_valid_queries, cmc.
  CMC has min(max_rank, G) entries.
  """
  scores = np.asarray(sim_or_dist)
  if scores.ndim != 2:
    raise errors.DataError(f"evaluate_text_to_image: scores must be 2-D, got {scores.shape}.")
  block = (lambda s, e: -scores[s:e]) if similarity else (lambda s, e: scores[s:e])
  out = _rank_all(block, *scores.shape, q_pids, g_pids, None, None, max_rank, chunk_size,
                  512 * 2**20, workers, "evaluate_text_to_image")
  return _with_recalls(out, max_rank)


def evaluate_text_features(
    text_feats: np.ndarray,
    image_feats: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    max_rank: int = 10,
    chunk_size: int | None = None,
    memory_budget_bytes: int = 512 * 2**20,
    workers: int | None = None,
) -> dict:
  """`evaluate_text_to_image` on the inner products of the embeddings (cosine similarity for
  L2-normalised ones), computed chunk by chunk: the caption x image matrix is never built."""
  q = np.asarray(text_feats, np.float32)
  g = np.asarray(image_feats, np.float32)
  if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
    raise errors.DataError(
        f"evaluate_text_features: embedding shapes {q.shape} and {g.shape} do not match.")
  out = _rank_all(lambda s, e: -(q[s:e] @ g.T), len(q), len(g), q_pids, g_pids, None, None,
                  max_rank, chunk_size, memory_budget_bytes, workers, "evaluate_text_features")
  return _with_recalls(out, max_rank)


def _with_recalls(out: dict, max_rank: int) -> dict:
  """R1/R5/R10 (those <= max_rank) in front of the metric dict; a gallery shorter than k has
  every query's match within rank k, so R@k = R@G."""
  cmc = out["cmc"]
  result = {f"R{k}": float(cmc[min(k, len(cmc)) - 1]) for k in (1, 5, 10) if k <= max_rank}
  result.update(out)
  return result
