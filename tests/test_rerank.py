"""k-reciprocal re-ranking vs a straightforward dense transcription; alpha-QE vs numpy."""

import numpy as np
import pytest

from retext_jax.evaluation import pairwise_distance, rerank
from retext_jax.evaluation.rerank import alpha_query_expansion, k_reciprocal_rerank, re_ranking


def dense_reference(q_g, q_q, g_g, k1, k2, lam):
  """Zhong et al.'s algorithm on the full matrix, row by row (stable argsort for ties)."""
  full = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32) ** 2
  od = (full / full.max(axis=1, keepdims=True)).astype(np.float32)
  n, nq = len(od), q_g.shape[0]
  rank = np.argsort(od, axis=1, kind="stable")

  def recip(i, k):
    fwd = rank[i, : k + 1]
    return np.array([j for j in fwd if i in rank[j, : k + 1]], np.int64)

  v = np.zeros((n, n), np.float32)
  half = int(np.around(k1 / 2.0))
  for i in range(n):
    r = recip(i, k1)
    expansion = list(r)
    for c in r:
      rc = recip(c, half)
      if len(np.intersect1d(rc, r)) > 2.0 / 3.0 * len(rc):
        expansion.extend(rc)
    idx = np.unique(expansion)
    w = np.exp(-od[i, idx])
    v[i, idx] = w / w.sum()
  if k2 != 1:
    v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
  jac = np.zeros((nq, n), np.float32)
  for i in range(nq):
    s = np.minimum(v[i][None, :], v).sum(axis=1)
    jac[i] = 1 - s / (2 - s)
  return (jac * (1 - lam) + od[:nq] * lam)[:, nq:]


def _feats(seed, nq, ng, dim=16, integer=False):
  rng = np.random.default_rng(seed)
  if integer:
    return (rng.integers(-2, 3, size=(nq, dim)).astype(np.float32),
            rng.integers(-2, 3, size=(ng, dim)).astype(np.float32))
  centers = rng.normal(size=(12, dim))
  q = centers[rng.integers(0, 12, nq)] + rng.normal(size=(nq, dim))
  g = centers[rng.integers(0, 12, ng)] + rng.normal(size=(ng, dim))
  return q.astype(np.float32), g.astype(np.float32)


def _reference_from_feats(q, g, metric, k1, k2, lam):
  pd = lambda a, b: pairwise_distance(a, b, metric)
  return dense_reference(pd(q, g), pd(q, q), pd(g, g), k1, k2, lam)


@pytest.mark.parametrize("metric,integer,k1,k2", [
    ("euclidean", False, 20, 6), ("cosine", False, 20, 6), ("euclidean", True, 7, 1),
    ("euclidean", False, 5, 3)])
def test_rerank_equals_dense_reference(metric, integer, k1, k2):
  q, g = _feats(0, 30, 90, integer=integer)
  ref = _reference_from_feats(q, g, metric, k1, k2, 0.3)
  got = k_reciprocal_rerank(q, g, k1, k2, 0.3, metric=metric, chunk_size=17)
  np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
  pd = lambda a, b: pairwise_distance(a, b, metric)
  got_mats = re_ranking(pd(q, g), pd(q, q), pd(g, g), k1, k2, 0.3, chunk_size=11)
  np.testing.assert_allclose(got_mats, ref, atol=1e-5, rtol=0)


def test_chunked_path_above_threshold_never_builds_dense(monkeypatch):
  q, g = _feats(1, 100, 500, dim=32)
  ref = _reference_from_feats(q, g, "euclidean", 20, 6, 0.3)
  assert rerank.rerank_path(600, dense_threshold=200) == "chunked"

  def forbidden(*args, **kwargs):
    raise AssertionError("dense N x N path used above the threshold")

  monkeypatch.setattr(rerank, "_DenseDistances", forbidden)
  got = k_reciprocal_rerank(q, g, metric="euclidean", dense_threshold=200, chunk_size=64)
  np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_rerank_improves_ranking_of_clustered_data():
  # Sanity on what re-ranking is for: same-cluster gallery items move ahead on average.
  rng = np.random.default_rng(2)
  centers = rng.normal(size=(10, 16)) * 2
  qi, gi = rng.integers(0, 10, 20), np.repeat(np.arange(10), 8)
  q = (centers[qi] + rng.normal(size=(20, 16))).astype(np.float32)
  g = (centers[gi] + rng.normal(size=(80, 16))).astype(np.float32)
  same = qi[:, None] == gi[None]

  def mean_match_rank(d):
    ranks = np.argsort(np.argsort(d, axis=1, kind="stable"), axis=1)
    return ranks[same].mean()

  assert mean_match_rank(k_reciprocal_rerank(q, g, k1=10, k2=3)) < mean_match_rank(
      pairwise_distance(q, g, "euclidean"))


def test_alpha_query_expansion_matches_numpy():
  rng = np.random.default_rng(3)
  q, g = rng.normal(size=(6, 8)), rng.normal(size=(20, 8))
  k, alpha = 3, 3.0
  qn = q / np.linalg.norm(q, axis=1, keepdims=True)
  gn = g / np.linalg.norm(g, axis=1, keepdims=True)
  expected = []
  for x in qn:
    sim = gn @ x
    top = np.argsort(-sim, kind="stable")[:k]
    y = x + sum(max(sim[j], 0) ** alpha * gn[j] for j in top)
    expected.append(y / np.linalg.norm(y))
  q_new, g_new = alpha_query_expansion(q, g, k=k, alpha=alpha, chunk_size=4)
  np.testing.assert_allclose(q_new, np.array(expected), atol=1e-6)
  np.testing.assert_allclose(g_new, gn, atol=1e-6)
  _, g_exp = alpha_query_expansion(q, g, k=k, alpha=alpha, expand_gallery=True)
  sim = gn @ gn[0]
  top = np.argsort(-sim, kind="stable")[1 : k + 1]
  y = gn[0] + sum(max(sim[j], 0) ** alpha * gn[j] for j in top)
  np.testing.assert_allclose(g_exp[0], y / np.linalg.norm(y), atol=1e-6)
