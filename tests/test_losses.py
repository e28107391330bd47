"""retext_jax.losses against float64 numpy re-derivations, plus properties a wrong loss breaks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from retext_jax import losses

TOL = 1e-5


def _rng(seed=0):
  return np.random.default_rng(seed)


def _np_norm(x):
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _np_log_softmax(x):
  m = x.max(axis=-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _ids_with_repeats(rng, n, num_ids):
  return rng.integers(0, num_ids, size=n).astype(np.int32)


def _assert_finite_grads(fn, *args):
  grads = jax.grad(fn, argnums=tuple(range(len(args))))(*args)
  for g in grads:
    assert np.all(np.isfinite(np.asarray(g)))


# --------------------------------------------------------------------------------------------
# ID cross-entropy and triplet.


def test_label_smoothing_ce_matches_numpy():
  rng = _rng(1)
  logits = rng.normal(size=(16, 11)).astype(np.float32) * 3
  labels = rng.integers(0, 11, size=16)
  logp = _np_log_softmax(logits.astype(np.float64))
  target = np.full((16, 11), 0.1 / 11)
  target[np.arange(16), labels] += 0.9
  ref = -(target * logp).sum(1).mean()
  got = losses.cross_entropy_label_smoothing(jnp.asarray(logits), jnp.asarray(labels), 0.1)
  np.testing.assert_allclose(float(got), ref, atol=TOL, rtol=0)
  _assert_finite_grads(lambda x: losses.cross_entropy_label_smoothing(x, labels), logits)


def _np_triplet(feats, labels, margin, soft):
  f = feats.astype(np.float64)
  d = np.sqrt(((f[:, None] - f[None]) ** 2).sum(-1))
  out = []
  for i in range(len(f)):
    pos = [d[i, j] for j in range(len(f)) if labels[j] == labels[i] and j != i]
    neg = [d[i, j] for j in range(len(f)) if labels[j] != labels[i]]
    if not pos or not neg:
      continue
    diff = max(pos) - min(neg)
    out.append(np.log1p(np.exp(diff)) if soft else max(diff + margin, 0.0))
  return np.mean(out) if out else 0.0


@pytest.mark.parametrize("soft", [False, True])
def test_batch_hard_triplet_matches_numpy(soft):
  rng = _rng(2)
  feats = rng.normal(size=(24, 16)).astype(np.float32)
  labels = np.repeat(np.arange(6), 4)
  labels[-1] = 99  # a singleton: no positive, masked out
  got = losses.batch_hard_triplet(jnp.asarray(feats), jnp.asarray(labels), 0.3, soft_margin=soft)
  np.testing.assert_allclose(float(got), _np_triplet(feats, labels, 0.3, soft), atol=TOL, rtol=0)
  _assert_finite_grads(lambda x: losses.batch_hard_triplet(x, labels, 0.3, soft), feats)


def test_triplet_zero_once_every_margin_holds_positive_otherwise():
  rng = _rng(3)
  centers = rng.normal(size=(4, 8)) * 10.0
  labels = np.repeat(np.arange(4), 3)
  feats = (centers[labels] + rng.normal(size=(12, 8)) * 0.01).astype(np.float32)
  assert float(losses.batch_hard_triplet(jnp.asarray(feats), jnp.asarray(labels), 0.3)) == 0.0
  # Move one sample of identity 0 onto identity 1's centre: its margin no longer holds.
  feats_bad = feats.copy()
  feats_bad[0] = centers[1]
  assert float(losses.batch_hard_triplet(jnp.asarray(feats_bad), jnp.asarray(labels), 0.3)) > 0


def test_triplet_without_any_valid_anchor_is_zero_and_finite():
  feats = jnp.asarray(_rng(4).normal(size=(4, 8)).astype(np.float32))
  all_same = jnp.zeros(4, jnp.int32)
  all_diff = jnp.arange(4)
  for labels in (all_same, all_diff):
    assert float(losses.batch_hard_triplet(feats, labels)) == 0.0
    _assert_finite_grads(lambda x, lab=labels: losses.batch_hard_triplet(x, lab), feats)


def test_reid_loss_combines_parts():
  rng = _rng(5)
  logits = jnp.asarray(rng.normal(size=(8, 5)).astype(np.float32))
  feats = jnp.asarray(rng.normal(size=(8, 6)).astype(np.float32))
  labels = jnp.asarray(np.repeat(np.arange(4), 2))
  out = losses.reid_loss(logits, feats, labels, id_weight=0.5, triplet_weight=2.0)
  assert float(out["id"]) == pytest.approx(float(losses.cross_entropy_label_smoothing(logits,
                                                                                      labels)))
  assert float(out["triplet"]) == pytest.approx(float(losses.batch_hard_triplet(feats, labels)))
  assert float(out["total"]) == pytest.approx(0.5 * float(out["id"]) + 2 * float(out["triplet"]))


# --------------------------------------------------------------------------------------------
# Matching losses.


def _np_iam(img, txt, ids, tau, alpha, mom):
  v, t = _np_norm(img.astype(np.float64)), _np_norm(txt.astype(np.float64))
  s = v @ t.T / tau
  y = (ids[:, None] == ids[None, :]).astype(np.float64)
  q = y / y.sum(1, keepdims=True)
  if alpha:
    sm = _np_norm(mom.astype(np.float64)) @ t.T / tau
    sm = np.exp(_np_log_softmax(sm))
    q = (1 - alpha) * q + alpha * sm
  q_t2i = q.T / q.T.sum(1, keepdims=True)
  i2t = -(q * _np_log_softmax(s)).sum(1).mean()
  t2i = -(q_t2i * _np_log_softmax(s.T)).sum(1).mean()
  return 0.5 * (i2t + t2i)


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_identity_aware_matching_matches_numpy(alpha):
  rng = _rng(6)
  img, txt, mom = (rng.normal(size=(12, 32)).astype(np.float32) for _ in range(3))
  ids = _ids_with_repeats(rng, 12, 5)
  got = losses.identity_aware_matching(jnp.asarray(img), jnp.asarray(txt), jnp.asarray(ids),
                                       0.07, alpha=alpha, momentum_img_emb=jnp.asarray(mom))
  np.testing.assert_allclose(float(got), _np_iam(img, txt, ids, 0.07, alpha, mom), atol=TOL,
                             rtol=0)
  _assert_finite_grads(
      lambda a, b: losses.identity_aware_matching(a, b, ids, 0.07, alpha, mom), img, txt)


def test_identity_aware_matching_needs_momentum_for_alpha():
  x = jnp.ones((2, 3))
  with pytest.raises(ValueError, match="momentum_img_emb"):
    losses.identity_aware_matching(x, x, jnp.arange(2), 0.07, alpha=0.5)


def test_iam_falls_as_pairs_align():
  # Same-identity images are near each other (their shared target only falls to its minimum
  # when captions of one identity score alike), captions start random and move to their images.
  rng = _rng(7)
  ids = np.arange(10) // 2
  img = (rng.normal(size=(5, 16))[ids] + 0.05 * rng.normal(size=(10, 16))).astype(np.float32)
  txt0 = rng.normal(size=(10, 16)).astype(np.float32)
  vals = [
      float(losses.identity_aware_matching(img, (1 - w) * txt0 + w * img, ids, 0.1))
      for w in np.linspace(0, 1, 6)
  ]
  assert all(b < a for a, b in zip(vals, vals[1:], strict=False)), vals


def test_iam_with_alpha_zero_and_unique_ids_is_itc():
  rng = _rng(8)
  img, txt = (rng.normal(size=(9, 16)).astype(np.float32) for _ in range(2))
  iam = losses.identity_aware_matching(img, txt, jnp.arange(9), 0.05)
  np.testing.assert_allclose(float(iam), float(losses.itc(img, txt, 0.05)), atol=1e-6, rtol=0)


def test_itc_matches_numpy():
  rng = _rng(9)
  img, txt = (rng.normal(size=(8, 16)).astype(np.float32) for _ in range(2))
  s = _np_norm(img.astype(np.float64)) @ _np_norm(txt.astype(np.float64)).T / 0.07
  ref = -0.5 * (np.diag(_np_log_softmax(s)).mean() + np.diag(_np_log_softmax(s.T)).mean())
  np.testing.assert_allclose(float(losses.itc(img, txt, 0.07)), ref, atol=TOL, rtol=0)


def test_sdm_matches_irra_formula():
  rng = _rng(10)
  img, txt = (rng.normal(size=(12, 32)).astype(np.float32) for _ in range(2))
  ids = _ids_with_repeats(rng, 12, 4)
  scale, eps = 50.0, 1e-8  # tau = 0.02, IRRA's default
  cos = _np_norm(img.astype(np.float64)) @ _np_norm(txt.astype(np.float64)).T
  y = (ids[:, None] == ids[None, :]).astype(np.float64)
  q = y / y.sum(1, keepdims=True)
  ref = 0.0
  for logits in (scale * cos, scale * cos.T):
    logp = _np_log_softmax(logits)
    ref += (np.exp(logp) * (logp - np.log(q + eps))).sum(1).mean()
  got = losses.sdm(jnp.asarray(img), jnp.asarray(txt), jnp.asarray(ids), scale, eps)
  # The KL terms sum values up to |log 1e-8| ~ 18 weighted by p; relative float32 error ~1e-7.
  np.testing.assert_allclose(float(got), ref, atol=TOL, rtol=0)
  _assert_finite_grads(lambda a, b: losses.sdm(a, b, ids, scale), img, txt)


# --------------------------------------------------------------------------------------------
# Structure-preserving loss and its queue.


def _np_sp(s1, m2, ids, tau, qe=None, qids=None):
  keys, kids = m2.astype(np.float64), ids
  if qe is not None:
    keep = qids >= 0
    keys = np.concatenate([keys, qe[keep].astype(np.float64)])
    kids = np.concatenate([ids, qids[keep]])
  logp = _np_log_softmax(_np_norm(s1.astype(np.float64)) @ _np_norm(keys).T / tau)
  out = []
  for i in range(len(s1)):
    pos = np.nonzero(kids == ids[i])[0]
    out.append(-logp[i, pos].mean())
  return np.mean(out)


def test_structure_preserving_matches_numpy_with_queue():
  rng = _rng(11)
  s1, m2 = (rng.normal(size=(8, 16)).astype(np.float32) for _ in range(2))
  ids = _ids_with_repeats(rng, 8, 4)
  qe = rng.normal(size=(12, 16)).astype(np.float32)
  qids = rng.integers(-1, 6, size=12).astype(np.int32)
  got = losses.structure_preserving(s1, m2, jnp.asarray(ids), 0.1, qe, jnp.asarray(qids))
  np.testing.assert_allclose(float(got), _np_sp(s1, m2, ids, 0.1, qe, qids), atol=TOL, rtol=0)
  no_queue = losses.structure_preserving(s1, m2, jnp.asarray(ids), 0.1)
  np.testing.assert_allclose(float(no_queue), _np_sp(s1, m2, ids, 0.1), atol=TOL, rtol=0)
  _assert_finite_grads(
      lambda a: losses.structure_preserving(a, m2, jnp.asarray(ids), 0.1, qe, jnp.asarray(qids)),
      s1)


def test_structure_preserving_empty_queue_slots_change_nothing():
  rng = _rng(12)
  s1, m2 = (rng.normal(size=(6, 8)).astype(np.float32) for _ in range(2))
  ids = jnp.asarray(np.array([0, 0, 1, 2, 2, 3]))
  queue = losses.queue_init(10, 8)
  queue = {**queue, "emb": jnp.asarray(rng.normal(size=(10, 8)).astype(np.float32) * 5)}
  with_empty = losses.structure_preserving(s1, m2, ids, 0.1, queue["emb"], queue["ids"])
  without = losses.structure_preserving(s1, m2, ids, 0.1)
  assert float(with_empty) == float(without)
  _assert_finite_grads(
      lambda a: losses.structure_preserving(a, m2, ids, 0.1, queue["emb"], queue["ids"]), s1)


def test_queue_push_is_fifo_and_wraps():
  q = losses.queue_init(5, 2)
  push = jax.jit(losses.queue_push)
  q = push(q, jnp.full((3, 2), 1.0), jnp.array([10, 11, 12]))
  np.testing.assert_array_equal(np.asarray(q["ids"]), [10, 11, 12, -1, -1])
  assert int(q["ptr"]) == 3
  q = push(q, jnp.full((3, 2), 2.0), jnp.array([20, 21, 22]))
  np.testing.assert_array_equal(np.asarray(q["ids"]), [22, 11, 12, 20, 21])
  np.testing.assert_array_equal(np.asarray(q["emb"])[:, 0], [2, 1, 1, 2, 2])
  assert int(q["ptr"]) == 1
  with pytest.raises(ValueError, match="larger than queue"):
    losses.queue_push(q, jnp.zeros((6, 2)), jnp.zeros(6, jnp.int32))


# --------------------------------------------------------------------------------------------
# Masked reconstruction.


def test_patchify_round_trip_and_conv_grid_order():
  rng = _rng(13)
  images = jnp.asarray(rng.normal(size=(2, 32, 16, 3)).astype(np.float32))
  patches = losses.patchify(images, 8)
  assert patches.shape == (2, 8, 8 * 8 * 3)
  np.testing.assert_array_equal(np.asarray(losses.unpatchify(patches, 8, 32, 16)), images)
  # A conv with kernel = stride = patch is a linear map of each patch: both orders must agree.
  conv = nn.Conv(features=5, kernel_size=(8, 8), strides=(8, 8), padding="VALID", use_bias=False)
  params = conv.init(jax.random.key(0), images)
  out = conv.apply(params, images).reshape(2, -1, 5)
  kernel = params["params"]["kernel"].reshape(-1, 5)  # (kh, kw, cin) flattened row-major
  np.testing.assert_allclose(np.asarray(patches @ kernel), np.asarray(out), atol=1e-5, rtol=0)


def _np_rec(pred, images, mask, p):
  b, h, w, c = images.shape
  t = images.astype(np.float64).reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  t = t.reshape(b, -1, p * p * c)
  t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, ddof=1, keepdims=True) + 1e-6)
  per = ((pred - t) ** 2).mean(-1)
  return (per * mask).sum() / mask.sum(), t


def test_masked_reconstruction_matches_numpy_and_ignores_visible_patches():
  rng = _rng(14)
  images = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
  pred = rng.normal(size=(2, 16, 48)).astype(np.float32)
  mask = (rng.uniform(size=(2, 16)) < 0.6).astype(np.float32)
  ref, target = _np_rec(pred, images, mask, 4)
  got = losses.masked_reconstruction(pred, images, mask, 4)
  np.testing.assert_allclose(float(got), ref, atol=TOL, rtol=0)
  # Zero when masked patches are predicted exactly, whatever the visible ones hold (even NaN).
  perfect = np.where(mask[..., None] > 0, target, np.nan).astype(np.float32)
  perfect_loss = float(losses.masked_reconstruction(perfect, images, mask, 4))
  assert perfect_loss == pytest.approx(0, abs=1e-10)
  garbage = np.where(mask[..., None] > 0, pred, 1e6).astype(np.float32)
  assert float(losses.masked_reconstruction(garbage, images, mask, 4)) == float(got)
  grad = jax.grad(lambda x: losses.masked_reconstruction(x, images, mask, 4))(pred)
  assert np.all(np.asarray(grad)[mask == 0] == 0)
  assert np.all(np.isfinite(np.asarray(grad)))


def test_masked_reconstruction_without_norm_pix_and_shape_error():
  rng = _rng(15)
  images = rng.uniform(size=(1, 8, 8, 1)).astype(np.float32)
  pred = rng.normal(size=(1, 4, 16)).astype(np.float32)
  mask = np.array([[1, 0, 1, 0]], np.float32)
  t = np.asarray(losses.patchify(images, 4), np.float64)
  ref = (((pred - t) ** 2).mean(-1) * mask).sum() / 2
  got = losses.masked_reconstruction(pred, images, mask, 4, norm_pix=False)
  np.testing.assert_allclose(float(got), ref, atol=TOL, rtol=0)
  with pytest.raises(ValueError, match="pred_patches"):
    losses.masked_reconstruction(pred[:, :3], images, mask, 4)


def test_losses_jit():
  rng = _rng(16)
  img, txt = (jnp.asarray(rng.normal(size=(6, 8)).astype(np.float32)) for _ in range(2))
  ids = jnp.asarray(np.array([0, 0, 1, 1, 2, 2]))
  eager = losses.identity_aware_matching(img, txt, ids, 0.07, 0.3, img)
  jitted = jax.jit(losses.identity_aware_matching, static_argnums=(4,))(img, txt, ids, 0.07, 0.3,
                                                                         img)
  np.testing.assert_allclose(float(jitted), float(eager), rtol=1e-6)
