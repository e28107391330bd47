"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) in bounded memory, and alpha-query-expansion.

Semantics follow the widely used torchreid/fast-reid formulation, with one documented tie rule:
- original distance od = d^2 / max_row(d^2) over the (Q+G) x (Q+G) matrix [[qq, qg], [gq, gg]]
  of `pairwise_distance` values d (torchreid squares its input distance the same way);
- neighbour lists: the k1+1 nearest by od, equal distances ranked by index (stable order);
- R(i) = k-reciprocal neighbours within the k1+1 list; expanded by R_half(c) = k1/2-reciprocal
  set (round(k1/2)+1 list, half-to-even rounding) of each c in R(i) when
  |R_half(c) & R(i)| > 2/3 |R_half(c)|;
- V[i, j] = exp(-od[i, j]) normalised over the expanded set; local query expansion
  V <- mean of V over the k2 nearest rows; Jaccard d_J = 1 - sum min / (2 - sum min);
- final = (1 - lambda) d_J + lambda od, for queries x gallery.

Memory: the dense path (N <= `dense_threshold`) keeps one N x N float32 od matrix. Above it the
chunked path never does: neighbour lists come from [chunk, N] float32 blocks of features, V is a
sparse float32 CSR matrix (~k1 * k2 * ... non-zeros per row), distances to expanded neighbours
are recomputed from features, and the Jaccard sums are accumulated per query chunk. The output
is the [Q, G] float32 re-ranked distance.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from retext_jax.evaluation.ranking import iter_distance_chunks
from retext_jax.linalg import l2_normalize


class _DenseDistances:
  """od rows from a stored N x N float32 matrix (small N, or a user-given distance matrix)."""

  def __init__(self, dist: np.ndarray):
    sq = np.square(dist.astype(np.float32))
    self.od = sq / np.max(sq, axis=1, keepdims=True)

  def rows(self, start: int, stop: int) -> np.ndarray:
    return self.od[start:stop]

  def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return self.od[rows[:, None], cols]


class _FeatureDistances:
  """od rows recomputed from features in blocks; no N x N array is ever held."""

  def __init__(self, feats: np.ndarray, metric: str, chunk: int):
    self.feats = np.asarray(feats, np.float32)
    self.metric = metric
    self.row_max = np.empty(len(self.feats), np.float32)
    for s, d in iter_distance_chunks(self.feats, self.feats, metric, chunk):
      self.row_max[s : s + len(d)] = np.max(np.square(d), axis=1)

  def rows(self, start: int, stop: int) -> np.ndarray:
    _, d = next(iter_distance_chunks(self.feats[start:stop], self.feats, self.metric, stop - start))
    return np.square(d) / self.row_max[start:stop, None]

  def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """od[rows[i], cols[i, l]] for a [c] x [c, L] index set (cols may hold -1 = unused)."""
    x = self.feats[rows][:, None, :]
    y = self.feats[np.maximum(cols, 0)]
    if self.metric == "cosine":
      xn, yn = l2_normalize(x), l2_normalize(y)
      d = 1.0 - np.einsum("cld,cld->cl", np.broadcast_to(xn, yn.shape), yn)
    else:
      d = (np.sum(x * x, -1) + np.sum(y * y, -1)
           - 2.0 * np.einsum("cld,cld->cl", np.broadcast_to(x, y.shape), y))
      d = np.maximum(d, 0.0)
    return (np.square(d.astype(np.float32)) / self.row_max[rows, None]).astype(np.float32)


def _stable_topk(block: np.ndarray, k: int) -> np.ndarray:
  """Indices of the k smallest entries per row, ascending by (value, index): a stable argsort
  prefix, from argpartition + an exact tie rule at the k-th value (no full row sort)."""
  c, n = block.shape
  if k >= n:
    return np.argsort(block, axis=1, kind="stable")[:, :k]
  part = np.argpartition(block, k - 1, axis=1)[:, :k]
  kth = np.max(np.take_along_axis(block, part, axis=1), axis=1, keepdims=True)
  below = block < kth
  equal = block == kth
  need = k - below.sum(axis=1, keepdims=True)
  chosen = below | (equal & (np.cumsum(equal, axis=1) <= need))
  idx = np.nonzero(chosen)[1].reshape(c, k)  # ascending index within each row
  vals = np.take_along_axis(block, idx, axis=1)
  return np.take_along_axis(idx, np.argsort(vals, axis=1, kind="stable"), axis=1)


def _reciprocal_mask(nbr: np.ndarray, k: int, chunk: int) -> np.ndarray:
  """mask[i, m] = i is within the first k neighbours of its m-th neighbour nbr[i, m]."""
  n = nbr.shape[0]
  mask = np.empty((n, k), bool)
  for s in range(0, n, chunk):
    ids = np.arange(s, min(s + chunk, n))
    back = nbr[nbr[ids, :k], :k]  # [c, k, k]
    mask[ids] = np.any(back == ids[:, None, None], axis=2)
  return mask


def _expanded_sets(nbr: np.ndarray, k1: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
  """Per row, the sorted k-reciprocal expansion set, padded with -1 ([N, L] int, counts)."""
  k = k1 + 1
  kh = int(np.around(k1 / 2.0)) + 1
  recip = _reciprocal_mask(nbr, k, chunk)
  recip_h = _reciprocal_mask(nbr, kh, chunk)
  n = nbr.shape[0]
  width = k + k * kh
  sets = np.full((n, width), -1, np.int64)
  counts = np.zeros(n, np.int64)
  for s in range(0, n, chunk):
    ids = np.arange(s, min(s + chunk, n))
    r_vals = np.where(recip[ids], nbr[ids, :k], -1)  # R(i), -1 = not reciprocal
    cand = np.maximum(r_vals, 0)
    h_vals = np.where(recip_h[cand], nbr[cand, :kh], -1)  # [c, k, kh]: R_half(candidate)
    h_vals = np.where(r_vals[:, :, None] >= 0, h_vals, -1)
    h_size = np.sum(h_vals >= 0, axis=2)
    in_r = np.any((h_vals[..., None] == r_vals[:, None, None, :]) & (h_vals[..., None] >= 0),
                  axis=3)
    accept = in_r.sum(axis=2) > (2.0 / 3.0) * h_size  # [c, k]
    h_vals = np.where(accept[:, :, None], h_vals, -1)
    merged = np.sort(np.concatenate([r_vals, h_vals.reshape(len(ids), -1)], axis=1), axis=1)
    dup = np.zeros_like(merged, bool)
    dup[:, 1:] = merged[:, 1:] == merged[:, :-1]
    merged = np.where(dup | (merged < 0), np.iinfo(np.int64).max, merged)
    merged = np.sort(merged, axis=1)
    cnt = np.sum(merged != np.iinfo(np.int64).max, axis=1)
    sets[ids] = np.where(merged == np.iinfo(np.int64).max, -1, merged)
    counts[ids] = cnt
  return sets, counts


def _jaccard_rows(v_rows: sp.csr_matrix, v_gal_csc: sp.csc_matrix) -> np.ndarray:
  """sum_k min(V[i, k], V[j, k]) for the given rows i against all gallery rows j."""
  c, ng = v_rows.shape[0], v_gal_csc.shape[0]
  coo = v_rows.tocoo()
  start = v_gal_csc.indptr[coo.col]
  cnt = v_gal_csc.indptr[coo.col + 1] - start
  total = int(cnt.sum())
  row_rep = np.repeat(coo.row, cnt)
  val_rep = np.repeat(coo.data, cnt)
  offsets = np.repeat(start - np.concatenate([[0], np.cumsum(cnt)[:-1]]), cnt)
  pos = offsets + np.arange(total)
  j = v_gal_csc.indices[pos]
  mins = np.minimum(val_rep, v_gal_csc.data[pos])
  flat = np.bincount(row_rep.astype(np.int64) * ng + j, weights=mins, minlength=c * ng)
  return flat.reshape(c, ng).astype(np.float32)


def _rerank(dists, num_query: int, n: int, k1: int, k2: int, lam: float, chunk: int):
  k = k1 + 1
  nbr = np.empty((n, k), np.int64)
  for s in range(0, n, chunk):
    nbr[s : s + chunk] = _stable_topk(dists.rows(s, min(s + chunk, n)), k)
  sets, counts = _expanded_sets(nbr, k1, chunk)
  indptr = np.concatenate([[0], np.cumsum(counts)])
  data = np.empty(indptr[-1], np.float32)
  for s in range(0, n, chunk):
    ids = np.arange(s, min(s + chunk, n))
    od = dists.pairs(ids, sets[ids])
    w = np.where(sets[ids] >= 0, np.exp(-od), 0.0).astype(np.float32)
    w /= w.sum(axis=1, keepdims=True)
    data[indptr[s] : indptr[ids[-1] + 1]] = w[sets[ids] >= 0]
  v = sp.csr_matrix((data, sets[sets >= 0], indptr), shape=(n, n))
  if k2 != 1:
    rows = np.repeat(np.arange(n), k2)
    avg = sp.csr_matrix((np.full(n * k2, 1.0 / k2, np.float32), (rows, nbr[:, :k2].ravel())),
                        shape=(n, n))
    v = (avg @ v).tocsr()
  v_gal = v[num_query:].tocsc()
  out = np.empty((num_query, n - num_query), np.float32)
  for s in range(0, num_query, chunk):
    e = min(s + chunk, num_query)
    inter = _jaccard_rows(v[s:e], v_gal)
    jac = 1.0 - inter / (2.0 - inter)
    out[s:e] = jac * (1.0 - lam) + dists.rows(s, e)[:, num_query:] * lam
  return out


def re_ranking(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    chunk_size: int = 1024,
) -> np.ndarray:
  """torchreid-style API on given distance matrices (holds the N x N od matrix, float32)."""
  full = np.block([[q_q_dist, q_g_dist], [q_g_dist.T, g_g_dist]]).astype(np.float32)
  return _rerank(_DenseDistances(full), q_g_dist.shape[0], full.shape[0], k1, k2, lambda_value,
                 chunk_size)


def rerank_path(num_total: int, dense_threshold: int) -> str:
  """'dense' (one N x N float32 matrix) or 'chunked' (bounded memory) for N = Q + G."""
  return "dense" if num_total <= dense_threshold else "chunked"


def k_reciprocal_rerank(
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = "euclidean",
    dense_threshold: int = 8000,
    chunk_size: int = 256,
) -> np.ndarray:
  """Re-ranked [Q, G] float32 distances from features; bounded memory above `dense_threshold`.

  Equals `re_ranking(pd(q, g), pd(q, q), pd(g, g))` with pd = `pairwise_distance(metric)`.
  """
  feats = np.concatenate([np.asarray(q_feats, np.float32), np.asarray(g_feats, np.float32)])
  n, nq = len(feats), len(q_feats)
  if rerank_path(n, dense_threshold) == "dense":
    full = np.empty((n, n), np.float32)
    for s, d in iter_distance_chunks(feats, feats, metric, chunk_size):
      full[s : s + len(d)] = d
    dists = _DenseDistances(full)
  else:
    dists = _FeatureDistances(feats, metric, chunk_size)
  return _rerank(dists, nq, n, k1, k2, lambda_value, chunk_size)


def alpha_query_expansion(
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    k: int = 5,
    alpha: float = 3.0,
    expand_gallery: bool = False,
    chunk_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
  """alpha-QE (Radenovic et al. 2018): x' = normalize(x + sum_{top-k g} max(cos, 0)^alpha g).

  Features are L2-normalised first; the top-k come from the gallery by cosine similarity.
  With `expand_gallery`, the gallery is expanded the same way against itself (its top-1 is the
  item itself and is skipped). Returns the new (query, gallery) features, float32.
  """
  def norm(x):
    return l2_normalize(np.asarray(x, np.float32))

  g = norm(g_feats)

  def expand(x: np.ndarray, skip_self: bool) -> np.ndarray:
    out = np.empty_like(x)
    kk = k + 1 if skip_self else k
    for s in range(0, len(x), chunk_size):
      sim = x[s : s + chunk_size] @ g.T
      top = _stable_topk(-sim, kk)[:, 1:] if skip_self else _stable_topk(-sim, kk)
      w = np.maximum(np.take_along_axis(sim, top, axis=1), 0.0) ** alpha
      agg = x[s : s + chunk_size] + np.einsum("ck,ckd->cd", w, g[top])
      out[s : s + chunk_size] = agg
    return norm(out)

  q_new = expand(norm(q_feats), skip_self=False)
  g_new = expand(g, skip_self=True) if expand_gallery else g
  return q_new, g_new
