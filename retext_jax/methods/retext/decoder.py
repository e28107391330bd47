"""Text-guided masked-patch decoder (ReText's reconstruction task).

A light MAE-style decoder: visible patch tokens from the student ViT are put back in place among
learned mask tokens, then each block self-attends over all patches, cross-attends to the BERT
token states of the caption, and applies an MLP. The head predicts the pixels of every patch;
the loss only reads the masked ones. The text is the only source of information about the masked
regions beyond their visible neighbours, which is what makes the reconstruction text-guided.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from retext_jax.models import layers


def scatter_visible(visible: jax.Array, patch_mask: jax.Array, fill: jax.Array) -> jax.Array:
  """Places visible tokens [B, Nv, D] back at the unmasked positions of a [B, N, D] sequence.

  Visible tokens are in ascending patch order (how the ViT gathers them); masked positions get
  `fill` ([D]).
  """
  b, n = patch_mask.shape
  nv = visible.shape[1]
  keep = jnp.argsort(patch_mask, axis=1, stable=True)[:, :nv]  # unmasked ids, ascending
  out = jnp.broadcast_to(fill.astype(visible.dtype), (b, n, visible.shape[-1]))
  return out.at[jnp.arange(b)[:, None], keep].set(visible)


class CrossBlock(nn.Module):
  """Pre-norm block: self-attention, cross-attention to text, MLP."""

  num_heads: int
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, text, text_mask, *, deterministic: bool = True):
    norm = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=name)
    h = norm("norm1")(x)
    x = x + layers.Attention(self.num_heads, self.dtype, name="self_attn")(h)
    h = norm("norm2")(x)
    x = x + layers.Attention(self.num_heads, self.dtype, name="cross_attn")(
        h, norm("norm_text")(text), mask=layers.padding_mask(text_mask)
    )
    h = norm("norm3")(x)
    return x + layers.Mlp(self.mlp_dim, dtype=self.dtype, name="mlp")(h)


class TextGuidedDecoder(nn.Module):
  """Predicts per-patch pixels [B, N, patch*patch*3] from visible tokens and caption tokens."""

  num_patches: int
  patch_pixels: int
  width: int = 192
  depth: int = 2
  num_heads: int = 3
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, visible, patch_mask, text_tokens, text_mask, *, deterministic=True):
    x = nn.Dense(self.width, dtype=self.dtype, name="embed")(visible)
    mask_token = self.param("mask_token", nn.initializers.normal(0.02), (self.width,))
    x = scatter_visible(x, patch_mask, mask_token)
    pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, self.num_patches,
                                                                      self.width))
    x = x + pos.astype(x.dtype)
    text = nn.Dense(self.width, dtype=self.dtype, name="text_embed")(text_tokens)
    for i in range(self.depth):
      x = CrossBlock(self.num_heads, 4 * self.width, self.dtype, name=f"block_{i}")(
          x, text, text_mask, deterministic=deterministic
      )
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
    return nn.Dense(self.patch_pixels, dtype=jnp.float32, name="head")(x)
