"""Transformer building blocks shared by the ViT, BERT and CLIP towers.

Params are float32; `dtype` sets the compute dtype (bfloat16 on accelerators). Attention runs
through `jax.nn.dot_product_attention` so GPUs get the fused kernels.

Stable API (other model files build on it):
  activation(name) -> callable               "gelu" | "gelu_tanh" | "quick_gelu" | "relu"
  padding_mask(mask[B, L]) -> bool[B,1,1,L]  True = attend (the `mask` convention below)
  Attention(num_heads, dtype, attn_dropout_rate, use_bias)
      (x[B,Lq,D], context[B,Lk,D] | None, *, mask=bool[B|1,1|H,Lq|1,Lk] | None,
       causal=False, deterministic=True) -> [B,Lq,D]
      params: query, key, value, out  (flax Dense: kernel [in, out], bias [out])
  Mlp(hidden_dim, activation="gelu", dropout_rate, dtype) -> params fc1, fc2
  DropPath(rate)(x, deterministic)            per-sample stochastic depth, rng "dropout"
  PreNormBlock(num_heads, mlp_dim, ...)(x, *, mask, causal, deterministic)
      params: norm1, attn, norm2, mlp                          (ViT, CLIP)
  PostNormBlock(num_heads, mlp_dim, ...)(x, *, mask, deterministic)
      params: attn, attn_norm, mlp, mlp_norm                   (BERT)
Dropout and drop-path draw from the "dropout" rng collection and are off when deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from retext_jax import errors

Dtype = jnp.dtype | type


def quick_gelu(x: jax.Array) -> jax.Array:
  """CLIP's sigmoid approximation of GELU (OpenAI checkpoints were trained with it)."""
  return x * jax.nn.sigmoid(1.702 * x)


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # HF "gelu" (BERT, ViT) is the erf form
  "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
  "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # HF's name for the tanh form
  "quick_gelu": quick_gelu,
  "relu": jax.nn.relu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Looks up an activation by the name HF configs use."""
  try:
    return _ACTIVATIONS[name]
  except KeyError:
    raise errors.ConfigError(
      f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}"
    ) from None


def padding_mask(mask: jax.Array) -> jax.Array:
  """[B, L] with 1/True on real tokens -> boolean [B, 1, 1, L] for `Attention(mask=...)`."""
  return jnp.asarray(mask).astype(bool)[:, None, None, :]


class Attention(nn.Module):
  """Multi-head attention; self-attention when `context` is None, cross-attention otherwise.

  Attention-probability dropout needs the probabilities, which the fused kernel never builds, so
  when it is active (training with attn_dropout_rate > 0) the softmax is computed explicitly.
  """

  num_heads: int
  dtype: Dtype = jnp.float32
  attn_dropout_rate: float = 0.0
  use_bias: bool = True

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    context: jax.Array | None = None,
    *,
    mask: jax.Array | None = None,
    causal: bool = False,
    deterministic: bool = True,
  ) -> jax.Array:
    context = x if context is None else context
    d = x.shape[-1]
    if d % self.num_heads:
      raise errors.ConfigError(f"width {d} is not divisible by num_heads={self.num_heads}")
    head_dim = d // self.num_heads
    dense = lambda name, n: nn.Dense(n, use_bias=self.use_bias, dtype=self.dtype, name=name)

    def heads(y: jax.Array) -> jax.Array:  # [B, L, D] -> [B, L, H, Dh]
      return y.reshape(*y.shape[:-1], self.num_heads, head_dim)

    q = heads(dense("query", d)(x))
    k = heads(dense("key", d)(context))
    v = heads(dense("value", d)(context))
    if mask is not None:
      mask = jnp.asarray(mask).astype(bool)
    if self.attn_dropout_rate > 0.0 and not deterministic:
      out = self._attend_with_dropout(q, k, v, mask, causal)
    else:
      out = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)
    out = out.reshape(*out.shape[:-2], d)
    return dense("out", d)(out)

  def _attend_with_dropout(self, q, k, v, mask, causal):
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    logits = logits.astype(jnp.float32)
    big_neg = jnp.finfo(jnp.float32).min
    if mask is not None:
      logits = jnp.where(mask, logits, big_neg)
    if causal:
      lq, lk = logits.shape[-2:]
      logits = jnp.where(jnp.tril(jnp.ones((lq, lk), bool)), logits, big_neg)
    probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    probs = nn.Dropout(self.attn_dropout_rate)(probs, deterministic=False)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


class Mlp(nn.Module):
  """Dense -> activation -> dropout -> Dense (the transformer feed-forward block)."""

  hidden_dim: int
  activation: str = "gelu"
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
    h = nn.Dense(self.hidden_dim, dtype=self.dtype, name="fc1")(x)
    h = activation(self.activation)(h)
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(h)


class DropPath(nn.Module):
  """Stochastic depth: drops the whole residual branch per sample, rescaling the survivors."""

  rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    survive = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
    return jnp.where(survive, x / keep, jnp.zeros_like(x))


class PreNormBlock(nn.Module):
  """x + DropPath(Attn(LN(x))); x + DropPath(MLP(LN(x))) — ViT / CLIP layout."""

  num_heads: int
  mlp_dim: int
  activation: str = "gelu"
  layer_norm_eps: float = 1e-6
  dropout_rate: float = 0.0
  attn_dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    *,
    mask: jax.Array | None = None,
    causal: bool = False,
    deterministic: bool = True,
  ) -> jax.Array:
    norm = lambda name: nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name=name)
    drop_path = DropPath(self.drop_path_rate)
    h = norm("norm1")(x)
    h = Attention(self.num_heads, self.dtype, self.attn_dropout_rate, name="attn")(
      h, mask=mask, causal=causal, deterministic=deterministic
    )
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    x = x + drop_path(h, deterministic=deterministic)
    h = norm("norm2")(x)
    h = Mlp(self.mlp_dim, self.activation, self.dropout_rate, self.dtype, name="mlp")(
      h, deterministic=deterministic
    )
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return x + drop_path(h, deterministic=deterministic)


class PostNormBlock(nn.Module):
  """LN(x + Attn(x)); LN(x + MLP(x)) — the original BERT layout."""

  num_heads: int
  mlp_dim: int
  activation: str = "gelu"
  layer_norm_eps: float = 1e-12
  dropout_rate: float = 0.0
  attn_dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self, x: jax.Array, *, mask: jax.Array | None = None, deterministic: bool = True
  ) -> jax.Array:
    norm = lambda name: nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name=name)
    h = Attention(self.num_heads, self.dtype, self.attn_dropout_rate, name="attn")(
      x, mask=mask, deterministic=deterministic
    )
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    x = norm("attn_norm")(x + h)
    h = Mlp(self.mlp_dim, self.activation, 0.0, self.dtype, name="mlp")(
      x, deterministic=deterministic
    )
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return norm("mlp_norm")(x + h)
