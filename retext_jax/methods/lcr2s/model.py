"""LCR²S's module: the dual encoder plus, for the teacher, one multi-head attentional fusion
(MHAF) per modality that fuses a sample's embedding with its support set.

Fusion (our reading; the paper's equations are not public): the sample's embedding is the
query; the keys and values are the sample itself and its support set (other samples of the same
identity). `fusion_layers` pre-norm blocks refine the query:

    h = x;  h = h + Attn(LN(h), LN([x, support]));  h = h + MLP(LN(h))

The keys are always the unrefined embeddings. With an empty support set the sample attends only
to itself, so its enriched feature is a function of the sample alone: exactly what the teacher
computes at test time, when there is no support set. The student has no fusion.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from retext_jax import errors
from retext_jax.methods.irra.model import DualEncoder, DualEncoderConfig
from retext_jax.models.layers import Mlp

ROLES = ("teacher", "student")


@dataclasses.dataclass(frozen=True)
class LCR2SConfig(DualEncoderConfig):
  role: str = "student"  # "teacher": the towers + fusion; "student": the towers alone
  fusion_heads: int = 8
  fusion_layers: int = 1
  fusion_mlp_ratio: int = 2

  def __post_init__(self):
    super().__post_init__()
    if self.role not in ROLES:
      raise errors.ConfigError(f"config.model.role={self.role!r}: expected one of {ROLES}")

  def towers(self) -> dict:
    """The fields teacher and student must share (towers, classes, widths)."""
    return DualEncoderConfig(**{f.name: getattr(self, f.name)
                                for f in dataclasses.fields(DualEncoderConfig)}).to_dict()


def support_sets(pid: jax.Array, record: jax.Array) -> jax.Array:
  """[B, B] bool: row i marks the batch samples in i's support set (same identity, another
  record: never the sample itself, nor a copy of its image drawn for a small identity)."""
  return (pid[:, None] == pid[None, :]) & (record[:, None] != record[None, :])


class AttentionalFusion(nn.Module):
  """Fuses each query with the keys it may attend to (see the module docstring)."""

  num_heads: int
  num_layers: int = 1
  mlp_ratio: int = 2
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, queries: jax.Array, keys: jax.Array, allowed: jax.Array) -> jax.Array:
    """queries [Q, D], keys [K, D], allowed [Q, K] bool (True = may attend; every row must allow
    at least the query's own key) -> enriched [Q, D] float32."""
    d = queries.shape[-1]
    if d % self.num_heads:
      raise errors.ConfigError(f"embedding width {d} is not divisible by "
                               f"model.fusion_heads={self.num_heads}")
    dh = d // self.num_heads
    split = lambda y: y.reshape(y.shape[0], self.num_heads, dh)
    dense = lambda name: nn.Dense(d, dtype=self.dtype, name=name)
    h = queries.astype(jnp.float32)
    for i in range(self.num_layers):
      kv = nn.LayerNorm(dtype=self.dtype, name=f"kv_norm_{i}")(keys)
      q = split(dense(f"query_{i}")(nn.LayerNorm(dtype=self.dtype, name=f"q_norm_{i}")(h)))
      k, v = split(dense(f"key_{i}")(kv)), split(dense(f"value_{i}")(kv))
      logits = jnp.einsum("qhd,khd->hqk", q, k).astype(jnp.float32) / jnp.sqrt(dh)
      logits = jnp.where(allowed[None], logits, jnp.finfo(jnp.float32).min)
      probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
      out = jnp.einsum("hqk,khd->qhd", probs, v).reshape(h.shape[0], d)
      h = h + dense(f"out_{i}")(out).astype(jnp.float32)
      mlp = Mlp(self.mlp_ratio * d, dtype=self.dtype, name=f"mlp_{i}")
      h = h + mlp(nn.LayerNorm(dtype=self.dtype, name=f"mlp_norm_{i}")(h)).astype(jnp.float32)
    return h


class LCR2S(DualEncoder):
  """The dual encoder; with role "teacher", also `image_fusion` and `text_fusion`."""

  config: LCR2SConfig

  def setup(self):
    super().setup()
    c = self.config
    if c.role == "teacher":
      fusion = lambda: AttentionalFusion(c.fusion_heads, c.fusion_layers, c.fusion_mlp_ratio,
                                         dtype=self.dtype)
      self.image_fusion = fusion()
      self.text_fusion = fusion()

  def fuse_image(self, queries, keys, allowed):
    return self.image_fusion(queries, keys, allowed)

  def fuse_text(self, queries, keys, allowed):
    return self.text_fusion(queries, keys, allowed)

  def enriched(self, images, tokens, token_mask, support, *, train: bool = False):
    """The teacher's enriched image and text features of a batch with its support sets."""
    img = self.embed_image(images, train=train)
    txt = self.embed_text(tokens, token_mask, train=train)
    allowed = support | jnp.eye(support.shape[0], dtype=bool)
    return self.fuse_image(img, img, allowed), self.fuse_text(txt, txt, allowed)

  def alone(self, embeddings, modality: str):
    """The teacher's feature of samples without a support set (test time)."""
    allowed = jnp.eye(embeddings.shape[0], dtype=bool)
    fuse = self.fuse_image if modality == "image" else self.fuse_text
    return fuse(embeddings, embeddings, allowed)

  def __call__(self, images, tokens, token_mask, *, train: bool = False):
    out = super().__call__(images, tokens, token_mask, train=train)
    if self.config.role == "teacher":
      out.update(img_fused=self.alone(out["img"], "image"),
                 txt_fused=self.alone(out["txt"], "text"))
    return out
