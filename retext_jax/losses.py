"""The methods' losses as pure, jit-able JAX functions (no TensorFlow, no Flax state).

ReText's and LCR²S's exact formulas are not public; each method's `method.py` gives our reading
and every choice made here is documented on the function that makes it. All embeddings are
L2-normalised inside the matching losses, so callers pass raw projections.

Conventions: `ids` are integer identity labels; a label of -1 marks an empty queue slot. Every
loss returns a float32 scalar averaged over the batch (or a dict of scalars for `reid_loss`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from retext_jax import errors
from retext_jax.linalg import l2_normalize


def _soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean over rows of -sum_j q_ij log softmax_j(logits_ij); zero-target entries contribute 0.

  The `where` keeps masked (-inf) logits from producing 0 * -inf = NaN in value or gradient.
  """
  logp = jax.nn.log_softmax(logits, axis=-1)
  per_entry = jnp.where(targets > 0, targets * logp, 0.0)
  return -jnp.mean(jnp.sum(per_entry, axis=-1))


# ----------------------------------------------------------------------------------------------
# Re-ID: ID cross-entropy with label smoothing + batch-hard triplet (BoT / TransReID recipe).


def cross_entropy_label_smoothing(
    logits: jax.Array, labels: jax.Array, eps: float = 0.1
) -> jax.Array:
  """ID loss: CE against (1 - eps) * onehot + eps / C (Szegedy et al.; torchreid's recipe)."""
  num_classes = logits.shape[-1]
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes, dtype=logits.dtype), eps)
  return jnp.mean(optax.softmax_cross_entropy(logits, targets))


def euclidean_distance(x: jax.Array, y: jax.Array) -> jax.Array:
  """sqrt(max(|x|^2 + |y|^2 - 2 x.y, 1e-12)): the BoT distance, with a gradient-safe floor."""
  sq = (
      jnp.sum(jnp.square(x), axis=-1)[:, None]
      + jnp.sum(jnp.square(y), axis=-1)[None, :]
      - 2.0 * x @ y.T
  )
  return jnp.sqrt(jnp.maximum(sq, 1e-12))


def batch_hard_triplet(
    features: jax.Array,
    labels: jax.Array,
    margin: float = 0.3,
    soft_margin: bool = False,
    normalize: bool = False,
) -> jax.Array:
  """Batch-hard triplet loss (Hermans et al. 2017) on Euclidean distances of pre-BN features.

  Per anchor: hardest positive = farthest same-label sample other than itself, hardest negative
  = closest other-label sample; loss = relu(d_ap - d_an + margin), or softplus(d_ap - d_an) with
  `soft_margin`. Anchors without a positive or a negative in the batch are masked out and the
  mean is over the remaining anchors (0 when none remains), so the loss never sees inf or NaN.
  """
  if normalize:
    features = l2_normalize(features)
  dist = euclidean_distance(features, features)
  n = features.shape[0]
  same = labels[:, None] == labels[None, :]
  not_self = ~jnp.eye(n, dtype=bool)
  pos_mask = same & not_self
  neg_mask = ~same
  has_pos = jnp.any(pos_mask, axis=1)
  has_neg = jnp.any(neg_mask, axis=1)
  # Distances are >= 0, so filling masked entries with 0 (max) / a row-wide upper bound (min)
  # never selects them; rows without any candidate are removed by `valid` below.
  d_ap = jnp.max(jnp.where(pos_mask, dist, 0.0), axis=1)
  upper = jax.lax.stop_gradient(jnp.max(dist)) + 1.0
  d_an = jnp.min(jnp.where(neg_mask, dist, upper), axis=1)
  diff = d_ap - d_an
  per_anchor = jax.nn.softplus(diff) if soft_margin else jax.nn.relu(diff + margin)
  valid = has_pos & has_neg
  per_anchor = jnp.where(valid, per_anchor, 0.0)
  return jnp.sum(per_anchor) / jnp.maximum(jnp.sum(valid), 1)


def reid_loss(
    logits: jax.Array,
    features: jax.Array,
    labels: jax.Array,
    *,
    label_smoothing: float = 0.1,
    margin: float = 0.3,
    soft_margin: bool = False,
    id_weight: float = 1.0,
    triplet_weight: float = 1.0,
) -> dict[str, jax.Array]:
  """L_reid = id_weight * CE_ls(BNNeck logits) + triplet_weight * triplet(pre-BN features).

  Returns {"id", "triplet", "total"} so the train step can log each part.
  """
  id_loss = cross_entropy_label_smoothing(logits, labels, label_smoothing)
  tri_loss = batch_hard_triplet(features, labels, margin=margin, soft_margin=soft_margin)
  return {
      "id": id_loss,
      "triplet": tri_loss,
      "total": id_weight * id_loss + triplet_weight * tri_loss,
  }


# ----------------------------------------------------------------------------------------------
# Cross-modal matching.


def identity_targets(ids_a: jax.Array, ids_b: jax.Array) -> jax.Array:
  """q_ij = y_ij / sum_k y_ik with y_ij = 1[ids_a_i == ids_b_j] (zero rows stay zero)."""
  y = (ids_a[:, None] == ids_b[None, :]).astype(jnp.float32)
  return y / jnp.maximum(jnp.sum(y, axis=1, keepdims=True), 1.0)


def identity_aware_matching(
    img_emb: jax.Array,
    txt_emb: jax.Array,
    ids: jax.Array,
    temperature: float | jax.Array,
    alpha: float = 0.0,
    momentum_img_emb: jax.Array | None = None,
) -> jax.Array:
  """L_iam: symmetric soft-target cross-entropy between images and captions (our reading).

  s_ij = <v_i, t_j> / tau on L2-normalised embeddings. Image->text target (row i):
    q_ij = (1 - alpha) * y_ij / sum_k y_ik + alpha * softmax_j(<v^m_i, t_j> / tau),
  y_ij = 1[id_i == id_j], v^m the momentum image embedding (stop-gradient). Text->image target
  (row j): the transposed matrix renormalised per text row, q'_ji = q_ij / sum_i' q_i'j, so both
  directions use one consistent soft matching (for alpha = 0 it is y_ji / sum_i y_ji).
  L = (CE_i2t + CE_t2i) / 2, the CLIP averaging, so alpha = 0 with one image per identity is
  exactly `itc`.
  """
  v = l2_normalize(img_emb)
  t = l2_normalize(txt_emb)
  logits = v @ t.T / temperature
  q = identity_targets(ids, ids)
  if alpha:
    if momentum_img_emb is None:
      raise ValueError("identity_aware_matching: alpha > 0 needs momentum_img_emb.")
    vm = jax.lax.stop_gradient(l2_normalize(momentum_img_emb))
    soft = jax.nn.softmax(vm @ jax.lax.stop_gradient(t).T / temperature, axis=1)
    q = (1.0 - alpha) * q + alpha * soft
  q = jax.lax.stop_gradient(q)
  q_t2i = q.T / jnp.maximum(jnp.sum(q.T, axis=1, keepdims=True), 1e-12)
  return 0.5 * (_soft_cross_entropy(logits, q) + _soft_cross_entropy(logits.T, q_t2i))


def itc(img_emb: jax.Array, txt_emb: jax.Array, temperature: float | jax.Array) -> jax.Array:
  """CLIP's symmetric InfoNCE: pair i is the only positive of row i in both directions."""
  logits = l2_normalize(img_emb) @ l2_normalize(txt_emb).T / temperature
  labels = jnp.arange(logits.shape[0])
  i2t = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  t2i = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels)
  return 0.5 * (jnp.mean(i2t) + jnp.mean(t2i))


def sdm(
    img_emb: jax.Array,
    txt_emb: jax.Array,
    ids: jax.Array,
    logit_scale: float | jax.Array,
    eps: float = 1e-8,
) -> jax.Array:
  """IRRA's similarity-distribution matching: KL(p_i2t || q) + KL(p_t2i || q).

  p = softmax(logit_scale * cos) per row, q_ij = y_ij / sum_k y_ik; each KL is
  mean_i sum_j p_ij (log p_ij - log(q_ij + eps)) and the two directions are summed (IRRA).
  """
  v = l2_normalize(img_emb)
  t = l2_normalize(txt_emb)
  i2t_logits = logit_scale * (v @ t.T)
  q = identity_targets(ids, ids)
  log_q = jnp.log(q + eps)

  def kl(logits: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits, axis=1)
    return jnp.mean(jnp.sum(jnp.exp(logp) * (logp - log_q), axis=1))

  return kl(i2t_logits) + kl(i2t_logits.T)


def feature_distillation(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """LCR²S's intra-modal distillation: mean over rows of the squared distance between the
  L2-normalised student and teacher features (normalised, so the loss does not depend on
  the two models' feature scales; the teacher's side carries no gradient)."""
  diff = l2_normalize(student) - jax.lax.stop_gradient(l2_normalize(teacher))
  return jnp.mean(jnp.sum(jnp.square(diff), axis=-1))


def relation_distillation(student_img: jax.Array, student_txt: jax.Array,
                          teacher_img: jax.Array, teacher_txt: jax.Array) -> jax.Array:
  """LCR²S's inter-modal distillation: || S_student - S_teacher ||_F, the Frobenius norm of the
  difference of the batch's image-text cosine-similarity matrices [B_img, B_txt]. The norm, not
  its square: its gradient keeps unit size until the two agree, as an L1 loss's does; the sum
  under the root is floored at 1e-24 so the gradient stays finite where they do."""
  sim = lambda v, t: l2_normalize(v) @ l2_normalize(t).T
  diff = sim(student_img, student_txt) - jax.lax.stop_gradient(sim(teacher_img, teacher_txt))
  return jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(diff)), 1e-24))


# ----------------------------------------------------------------------------------------------
# Structure preservation in the image modality, with a FIFO queue of momentum embeddings.


def queue_init(size: int, dim: int) -> dict[str, jax.Array]:
  """An empty queue: zero embeddings, ids -1 (masked out by `structure_preserving`), ptr 0."""
  return {
      "emb": jnp.zeros((size, dim), jnp.float32),
      "ids": jnp.full((size,), -1, jnp.int32),
      "ptr": jnp.zeros((), jnp.int32),
  }


def queue_push(queue: dict[str, jax.Array], emb: jax.Array, ids: jax.Array) -> dict[str, jax.Array]:
  """Writes a batch at the FIFO pointer (wrapping around), overwriting the oldest entries.

  Fixed shapes, so it lives inside the jitted step; embeddings are stored stop-gradient.
  """
  size = queue["emb"].shape[0]
  batch = emb.shape[0]
  if batch > size:
    raise errors.ConfigError(f"queue_push: batch {batch} larger than queue size {size}: raise "
                             "config.loss.queue_size")
  slots = (queue["ptr"] + jnp.arange(batch)) % size
  return {
      "emb": queue["emb"].at[slots].set(jax.lax.stop_gradient(emb).astype(queue["emb"].dtype)),
      "ids": queue["ids"].at[slots].set(ids.astype(queue["ids"].dtype)),
      "ptr": (queue["ptr"] + batch) % size,
  }


def structure_preserving(
    student_emb_view1: jax.Array,
    momentum_emb_view2: jax.Array,
    ids: jax.Array,
    temperature: float | jax.Array,
    queue_emb: jax.Array | None = None,
    queue_ids: jax.Array | None = None,
) -> jax.Array:
  """L_sp: multi-positive InfoNCE between student view-1 and momentum view-2 image embeddings.

  Keys = momentum view-2 embeddings of the batch (stop-gradient), plus queued past momentum
  embeddings when given; queue slots with id -1 are empty and masked out of the softmax.
  Positives of anchor i: every valid key with the same identity (always including its own
  view 2). Target q_ij = y_ij / sum_k y_ik (the SupCon "L_out" form), which is identical to
  averaging -log p_ij over the positives.
  """
  keys = momentum_emb_view2
  key_ids = ids
  if queue_emb is not None:
    if queue_ids is None:
      raise ValueError("structure_preserving: queue_emb given without queue_ids.")
    keys = jnp.concatenate([keys, queue_emb.astype(keys.dtype)], axis=0)
    key_ids = jnp.concatenate([ids, queue_ids.astype(ids.dtype)], axis=0)
  keys = jax.lax.stop_gradient(l2_normalize(keys))
  logits = l2_normalize(student_emb_view1) @ keys.T / temperature
  valid = key_ids >= 0
  logits = jnp.where(valid[None, :], logits, -jnp.inf)
  y = ((ids[:, None] == key_ids[None, :]) & valid[None, :]).astype(jnp.float32)
  q = y / jnp.maximum(jnp.sum(y, axis=1, keepdims=True), 1.0)
  return _soft_cross_entropy(logits, q)


# ----------------------------------------------------------------------------------------------
# Masked reconstruction (MAE-style, text-guided decoder lives in the model).


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
  """[B, H, W, C] -> [B, (H/p)*(W/p), p*p*C], patches in row-major grid order.

  The grid order equals `nn.Conv(kernel_size=(p, p), strides=(p, p))` output reshaped to
  [B, h*w, D]; inside a patch the order is (row, column, channel), as in MAE.
  """
  b, h, w, c = images.shape
  p = patch_size
  if h % p or w % p:
    raise ValueError(f"patchify: image {h}x{w} not divisible by patch size {p}.")
  x = images.reshape(b, h // p, p, w // p, p, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: jax.Array, patch_size: int, height: int, width: int) -> jax.Array:
  """Inverse of `patchify`: [B, N, p*p*C] -> [B, H, W, C]."""
  b, n, d = patches.shape
  p = patch_size
  gh, gw = height // p, width // p
  if gh * gw != n or d % (p * p):
    raise ValueError(f"unpatchify: {n} patches of size {d} do not tile {height}x{width}/p={p}.")
  c = d // (p * p)
  x = patches.reshape(b, gh, gw, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, height, width, c)


def normalized_patch_targets(patches: jax.Array, eps: float = 1e-6) -> jax.Array:
  """MAE's norm_pix targets: (x - mean) / sqrt(var + eps) per patch, var unbiased as in MAE."""
  mean = jnp.mean(patches, axis=-1, keepdims=True)
  var = jnp.var(patches, axis=-1, keepdims=True, ddof=1)
  return (patches - mean) / jnp.sqrt(var + eps)


def masked_reconstruction(
    pred_patches: jax.Array,
    target_images: jax.Array,
    patch_mask: jax.Array,
    patch_size: int,
    norm_pix: bool = True,
) -> jax.Array:
  """L_rec: per-patch MSE averaged over masked patches only (patch_mask 1 = masked/predicted).

  Unmasked patches get zero weight (and zero gradient); with no masked patch the loss is 0.
  """
  target = patchify(target_images, patch_size).astype(jnp.float32)
  if norm_pix:
    target = normalized_patch_targets(target)
  if pred_patches.shape != target.shape:
    raise ValueError(
        f"masked_reconstruction: pred_patches {pred_patches.shape} != targets {target.shape}."
    )
  per_patch = jnp.mean(jnp.square(pred_patches.astype(jnp.float32) - target), axis=-1)
  mask = patch_mask.astype(jnp.float32)
  return jnp.sum(jnp.where(mask > 0, per_patch * mask, 0.0)) / jnp.maximum(jnp.sum(mask), 1.0)
