"""Re-ID / text-to-image metrics against a classic per-query loop and hand-computed values."""

import numpy as np
import pytest

from retext_jax.evaluation import (
    evaluate_features,
    evaluate_rank,
    evaluate_text_features,
    evaluate_text_to_image,
    pairwise_distance,
)
from retext_jax.evaluation.device import evaluate_features_jax


def loop_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
  """The torchreid/fast-reid per-query loop (stable argsort; fast-reid's INP)."""
  all_cmc, all_ap, all_inp = [], [], []
  max_rank = min(max_rank, distmat.shape[1])
  for i in range(distmat.shape[0]):
    order = np.argsort(distmat[i], kind="stable")
    if q_camids is None:
      keep = np.ones(len(order), bool)
    else:
      known = q_camids[i] >= 0  # -1: camera unknown, nothing is removed
      keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]) & known)
    raw = (g_pids[order] == q_pids[i])[keep].astype(np.float64)
    if not raw.any():
      continue
    cmc = np.minimum(raw.cumsum(), 1.0)
    cmc = np.concatenate([cmc, np.ones(max(0, max_rank - len(cmc)))])
    all_cmc.append(cmc[:max_rank])
    hits = raw.cumsum()
    precision = hits / (np.arange(len(raw)) + 1.0)
    all_ap.append((precision * raw).sum() / raw.sum())
    last = np.nonzero(raw)[0].max()
    all_inp.append(hits[last] / (last + 1.0))
  return {
      "cmc": np.mean(all_cmc, axis=0),
      "mAP": float(np.mean(all_ap)),
      "mINP": float(np.mean(all_inp)),
      "num_valid_queries": len(all_ap),
  }


def _assert_same(got, ref, tol=1e-6):
  assert got["num_valid_queries"] == ref["num_valid_queries"]
  np.testing.assert_allclose(got["cmc"], ref["cmc"], atol=tol, rtol=0)
  assert got["mAP"] == pytest.approx(ref["mAP"], abs=tol)
  assert got["mINP"] == pytest.approx(ref["mINP"], abs=tol)


def _problem(seed, nq=60, ng=300, num_ids=25, num_cams=4, dim=16, integer=False):
  """Repeated identities, distractors (pid 0 and ids never queried), same-camera matches and
  queries whose only matches share their camera (no valid match)."""
  rng = np.random.default_rng(seed)
  g_pids = rng.integers(0, num_ids, size=ng)
  g_pids[:20] = 1000 + np.arange(20)  # unmatched gallery ids
  g_cams = rng.integers(0, num_cams, size=ng)
  q_pids = rng.integers(1, num_ids, size=nq)
  q_cams = rng.integers(0, num_cams, size=nq)
  # A query identity whose gallery images all share its camera: skipped by the protocol.
  g_pids[g_pids == num_ids - 1] = 0
  g_pids[-3:] = num_ids + 5
  g_cams[-3:] = 2
  q_pids[:2] = num_ids + 5
  q_cams[:2] = 2
  q_pids[2] = 5000  # no gallery image at all
  q_cams[3:6] = -1  # unknown cameras (own data): nothing removed for these queries
  g_cams[20:40] = -1
  if integer:  # exact distances with many ties: exercises the stable tie order
    q = rng.integers(-2, 3, size=(nq, dim)).astype(np.float32)
    g = rng.integers(-2, 3, size=(ng, dim)).astype(np.float32)
  else:
    centers = rng.normal(size=(num_ids + 6, dim))
    q = centers[q_pids % (num_ids + 6)] + rng.normal(size=(nq, dim)) * 1.2
    g = centers[g_pids % (num_ids + 6)] + rng.normal(size=(ng, dim)) * 1.2
  return q.astype(np.float32), g.astype(np.float32), q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("seed,integer", [(0, False), (1, False), (2, True)])
def test_evaluate_rank_equals_per_query_loop(seed, integer):
  q, g, qp, gp, qc, gc = _problem(seed, integer=integer)
  dist = pairwise_distance(q, g, "euclidean")
  ref = loop_reference(dist, qp, gp, qc, gc, 50)
  assert ref["num_valid_queries"] < len(qp)  # some queries really are skipped
  _assert_same(evaluate_rank(dist, qp, gp, qc, gc, max_rank=50), ref)
  for chunk in (1, 7, 1000):
    _assert_same(evaluate_rank(dist, qp, gp, qc, gc, max_rank=50, chunk_size=chunk), ref)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_ties_at_true_matches_and_threads_equal_the_loop(workers):
  # Distances on a coarse grid: every true match shares its distance with other true matches,
  # junk and distractors at lower and higher gallery indices, so only the stable order is right.
  rng = np.random.default_rng(9)
  q, g, qp, gp, qc, gc = _problem(7)
  dist = rng.integers(0, 6, size=(len(qp), len(gp))).astype(np.float32)
  tied_match = (gp[None] == qp[:, None]) & np.roll(gp[None] != qp[:, None], 1, axis=1)
  assert tied_match.sum() > 50
  ref = loop_reference(dist, qp, gp, qc, gc, 50)
  for chunk in (None, 1, 8):
    _assert_same(evaluate_rank(dist, qp, gp, qc, gc, 50, chunk_size=chunk, workers=workers), ref)
  # Other dtypes take the stable-argsort path; negative distances and -0.0 order as floats do.
  signed_zeros = np.where((dist == 0) & (rng.random(dist.shape) < 0.5), np.float32(-0.0), dist)
  for shifted in (dist.astype(np.float64), dist - 3, -dist, signed_zeros):
    _assert_same(evaluate_rank(shifted, qp, gp, qc, gc, 50, chunk_size=8, workers=workers),
                 loop_reference(shifted, qp, gp, qc, gc, 50))
  # A float row without ties takes the unstable fast sort alone; it must agree as well.
  dist = pairwise_distance(q, g, "cosine")
  _assert_same(evaluate_rank(dist, qp, gp, qc, gc, 50, chunk_size=5, workers=workers),
               loop_reference(dist, qp, gp, qc, gc, 50))


def test_hand_computed_single_query():
  # Gallery ranked by distance: g0 (pid 1, cam 0 = junk: same id and camera), g1 (pid 2),
  # g2 (pid 1, cam 1: match), g3 (pid 3), g4 (pid 1, cam 2: match).
  dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]], np.float32)
  g_pids = np.array([1, 2, 1, 3, 1])
  g_cams = np.array([0, 1, 1, 1, 2])
  out = evaluate_rank(dist, np.array([1]), g_pids, np.array([0]), g_cams, max_rank=4)
  # After removing g0: [g1, g2, g3, g4] -> matches at ranks 2 and 4.
  np.testing.assert_array_equal(out["cmc"], [0, 1, 1, 1])
  assert out["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
  assert out["mINP"] == pytest.approx(2 / 4)
  assert out["num_valid_queries"] == 1


def test_unknown_camera_removes_nothing():
  # Query camera -1 (unknown): its same-id gallery image of camera -1 is a true match, not junk.
  dist = np.array([[0.1, 0.2]], np.float32)
  out = evaluate_rank(dist, np.array([1]), np.array([1, 2]), np.array([-1]), np.array([-1, 0]),
                      max_rank=2)
  np.testing.assert_array_equal(out["cmc"], [1, 1])
  assert out["mAP"] == 1.0 and out["num_valid_queries"] == 1


def test_ties_rank_by_gallery_index():
  dist = np.zeros((1, 4), np.float32)
  out = evaluate_rank(dist, np.array([7]), np.array([3, 7, 3, 7]), None, None, max_rank=4)
  np.testing.assert_array_equal(out["cmc"], [0, 1, 1, 1])
  assert out["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_max_rank_clamped_to_gallery_and_errors():
  dist = np.array([[0.3, 0.1, 0.2]], np.float32)
  out = evaluate_rank(dist, np.array([1]), np.array([2, 3, 1]), None, None, max_rank=50)
  np.testing.assert_array_equal(out["cmc"], [0, 1, 1])
  with pytest.raises(ValueError, match="g_pids"):
    evaluate_rank(dist, np.array([1]), np.array([2, 3]), None, None)
  with pytest.raises(ValueError, match="no query has a true match"):
    evaluate_rank(dist, np.array([9]), np.array([2, 3, 1]), None, None)
  with pytest.raises(ValueError, match="finite"):
    evaluate_rank(np.array([[np.nan, 0, 1]]), np.array([1]), np.array([2, 3, 1]), None, None)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_evaluate_features_matches_distmat_path(metric):
  q, g, qp, gp, qc, gc = _problem(3)
  ref = loop_reference(pairwise_distance(q, g, metric), qp, gp, qc, gc, 20)
  for chunk in (None, 9):
    got = evaluate_features(q, g, qp, gp, qc, gc, max_rank=20, metric=metric, chunk_size=chunk)
    _assert_same(got, ref)


def test_pairwise_distance_matches_numpy():
  rng = np.random.default_rng(4)
  q, g = rng.normal(size=(7, 5)), rng.normal(size=(9, 5))
  qn = q / np.linalg.norm(q, axis=1, keepdims=True)
  gn = g / np.linalg.norm(g, axis=1, keepdims=True)
  np.testing.assert_allclose(pairwise_distance(q, g, chunk=3), 1 - qn @ gn.T, atol=1e-6)
  sq = ((q[:, None] - g[None]) ** 2).sum(-1)
  np.testing.assert_allclose(pairwise_distance(q, g, "euclidean", chunk=2), sq, atol=1e-5)
  with pytest.raises(ValueError, match="metric"):
    pairwise_distance(q, g, "manhattan")


def test_text_to_image_matches_simple_loop():
  rng = np.random.default_rng(5)
  g_pids = np.repeat(np.arange(20), 3)
  q_pids = np.repeat(np.arange(20), 2)
  sim = rng.normal(size=(40, 60)).astype(np.float32) + 2.0 * (q_pids[:, None] == g_pids[None])
  got = evaluate_text_to_image(sim, q_pids, g_pids, max_rank=10)
  r_at, aps, inps = {1: [], 5: [], 10: []}, [], []
  for i in range(40):
    order = np.argsort(-sim[i], kind="stable")
    match = g_pids[order] == q_pids[i]
    pos = np.nonzero(match)[0]
    for k in r_at:
      r_at[k].append(pos[0] < k)
    aps.append(np.mean([(j + 1) / (p + 1) for j, p in enumerate(pos)]))
    inps.append(len(pos) / (pos[-1] + 1))
  for k in r_at:
    assert got[f"R{k}"] == pytest.approx(np.mean(r_at[k]), abs=1e-9)
  assert got["mAP"] == pytest.approx(np.mean(aps), abs=1e-9)
  assert got["mINP"] == pytest.approx(np.mean(inps), abs=1e-9)
  assert got["num_valid_queries"] == 40


def test_text_features_equal_the_matrix_path():
  rng = np.random.default_rng(8)
  g_pids = np.repeat(np.arange(15), 2)
  q_pids = np.repeat(np.arange(15), 3)
  text = rng.integers(-2, 3, size=(45, 8)).astype(np.float32)  # integer scores: many ties
  image = rng.integers(-2, 3, size=(30, 8)).astype(np.float32)
  ref = evaluate_text_to_image(text @ image.T, q_pids, g_pids, max_rank=10)
  got = evaluate_text_features(text, image, q_pids, g_pids, max_rank=10, chunk_size=4,
                               workers=2)
  _assert_same(got, ref, tol=1e-12)
  assert [got[k] for k in ("R1", "R5", "R10")] == [ref[k] for k in ("R1", "R5", "R10")]
  _assert_same(ref, loop_reference(-(text @ image.T), q_pids, g_pids, None, None, 10))
  on_device = evaluate_features_jax(text, image, q_pids, g_pids, None, None, 10, "dot",
                                    chunk_size=8)
  _assert_same(on_device, ref)  # AP summed in float32 on the device


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_jax_device_path_matches_numpy(metric):
  # Integer features make euclidean distances exact in both numpy and XLA, ties included.
  q, g, qp, gp, qc, gc = _problem(6, integer=metric == "euclidean")
  ref = evaluate_features(q, g, qp, gp, qc, gc, max_rank=10, metric=metric)
  got = evaluate_features_jax(q, g, qp, gp, qc, gc, max_rank=10, metric=metric, chunk_size=16)
  _assert_same(got, ref)
  top = evaluate_features_jax(q, g, qp, gp, qc, gc, max_rank=10, metric=metric, chunk_size=16,
                              mode="topk")
  np.testing.assert_allclose(top["cmc"], ref["cmc"], atol=1e-12)
  assert top["mAP"] is None and top["num_valid_queries"] == ref["num_valid_queries"]
