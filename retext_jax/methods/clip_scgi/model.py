"""CLIP-SCGI's module: CLIP towers, caption-guided inversion (CGI), contextual feature fusion
(CFF), BNNeck heads.

The paper's code is not public; this follows the only detailed reading available (a third-party
reimplementation that cites the paper's equations). Every size is a field of `CLIPSCGIConfig`.

* Image: the CLIP vision tower; its class token (after the post-norm) is the Re-ID feature:
  triplet loss before the BNNeck, ID loss after it. At test time this is all that runs.
* CGI (training only): the caption's CLIP text embedding t (no gradient) refines the projected
  image tokens, v~ = v * t (Eq. 3). A global pseudo-token comes from v~_cls through a 3-layer
  MLP; a local one from `num_queries` learned queries that cross-attend to v~'s patch tokens
  (QC = Q + CrossAttn(LN(Q), LN(v~)), P = QC + FFN(LN(QC))) and are averaged through another
  3-layer MLP (Eq. 4-5). Their sum S* replaces the placeholder word X of the prompt
  "a photo of a X person" in the text tower's token embeddings.
* CFF (training only): the prompt's text tokens cross-attend to the image tokens, then
  `cff_blocks` transformer blocks; the end-of-text output goes through its own BNNeck and ID
  classifier.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from retext_jax.methods import heads
from retext_jax.models import clip
from retext_jax.models.configs import DictConfig
from retext_jax.models.layers import Attention, Mlp, PreNormBlock, padding_mask


@dataclasses.dataclass(frozen=True)
class CLIPSCGIConfig(DictConfig):
  clip: clip.CLIPConfig
  num_classes: int
  prompt_ids: tuple[int, ...]  # "a photo of a X person", padded to the text length
  prompt_mask: tuple[int, ...]
  placeholder: int  # position of X in prompt_ids
  cgi: bool = True
  cff: bool = True
  num_queries: int = 2
  cgi_heads: int = 8
  cff_blocks: int = 2
  cff_heads: int = 8

  @property
  def uses_text(self) -> bool:
    return self.cgi or self.cff

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> CLIPSCGIConfig:
    return super().from_dict({**d, "clip": clip.config_from_dict(d["clip"]),
                              "prompt_ids": tuple(d["prompt_ids"]),
                              "prompt_mask": tuple(d["prompt_mask"])})


def _mlp3(width: int, out: int, name: str, dtype) -> nn.Module:
  """The 3-layer fully connected network of CGI's f_M."""
  return nn.Sequential([nn.Dense(width, dtype=dtype), nn.relu, nn.Dense(width, dtype=dtype),
                        nn.relu, nn.Dense(out, dtype=dtype)], name=name)


class CaptionGuidedInversion(nn.Module):
  """Image tokens refined by the caption -> one pseudo-word embedding [B, out_dim]."""

  out_dim: int
  num_queries: int = 2
  num_heads: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image_tokens: jax.Array, caption: jax.Array) -> jax.Array:
    refined = image_tokens * caption[:, None, :]  # v~ = v * t
    d = refined.shape[-1]
    norm = lambda name: nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name=name)
    pseudo_global = _mlp3(d, self.out_dim, "global_mlp", self.dtype)(refined[:, 0])
    queries = self.param("queries", nn.initializers.normal(0.02), (self.num_queries, d))
    q = jnp.broadcast_to(queries.astype(refined.dtype), (refined.shape[0], self.num_queries, d))
    q = q + Attention(self.num_heads, self.dtype, name="cross_attn")(
        norm("norm_q")(q), norm("norm_kv")(refined[:, 1:]))
    p = q + Mlp(4 * d, dtype=self.dtype, name="ffn")(norm("norm_ffn")(q))
    pseudo_local = _mlp3(d, self.out_dim, "local_mlp", self.dtype)(p.mean(axis=1))
    return pseudo_global + pseudo_local


class ContextualFeatureFusion(nn.Module):
  """Prompt text tokens attend to the image tokens, then transformer blocks; returns the
  end-of-text output [B, D_text]."""

  num_blocks: int = 2
  num_heads: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, text_tokens, text_mask, eot, image_tokens, *, deterministic=True):
    d = text_tokens.shape[-1]
    norm = lambda name: nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name=name)
    image = nn.Dense(d, dtype=self.dtype, name="image_in")(image_tokens)
    x = text_tokens + Attention(self.num_heads, self.dtype, name="cross_attn")(
        norm("norm_q")(text_tokens), norm("norm_kv")(image))
    for i in range(self.num_blocks):
      x = PreNormBlock(self.num_heads, 4 * d, layer_norm_eps=1e-5, dtype=self.dtype,
                       name=f"block_{i}")(x, mask=padding_mask(text_mask),
                                          deterministic=deterministic)
    x = norm("norm")(x)
    return x[jnp.arange(x.shape[0]), eot].astype(jnp.float32)


class LogitScale(nn.Module):
  """CLIP's learned log inverse temperature (its own module: only training reads it)."""

  init: float

  @nn.compact
  def __call__(self) -> jax.Array:
    return self.param("logit_scale", nn.initializers.constant(self.init), (), jnp.float32)


class CLIPSCGI(nn.Module):
  config: CLIPSCGIConfig
  dtype: Any = jnp.float32

  def setup(self):
    c = self.config
    self.vision = clip.CLIPVisionTower(c.clip.vision, c.clip.projection_dim, self.dtype)
    self.bnneck = heads.bnneck()
    self.classifier = heads.id_classifier(c.num_classes)
    if c.uses_text:
      self.text = clip.CLIPTextTower(c.clip.text, c.clip.projection_dim, self.dtype)
    if c.cgi:
      self.cgi_module = CaptionGuidedInversion(c.clip.text.hidden_size, c.num_queries,
                                               c.cgi_heads, self.dtype)
      self.temperature = LogitScale(c.clip.logit_scale_init)
    if c.cff:
      self.cff_module = ContextualFeatureFusion(c.cff_blocks, c.cff_heads, self.dtype)
      self.cff_bnneck = heads.bnneck()
      self.cff_classifier = heads.id_classifier(c.num_classes)

  def image(self, images, camids=None, *, train: bool = False, project_tokens: bool = False):
    """(vision tower outputs, Re-ID feature before the BNNeck, after it)."""
    camera = camids if self.config.clip.vision.num_cameras else None
    out = self.vision(images, camera=camera, project_tokens=project_tokens,
                      deterministic=not train)
    feat = out["cls"].astype(jnp.float32)
    return out, feat, self.bnneck(feat, use_running_average=not train)

  def features(self, images, neck: str = "after"):
    """The test-time feature: the image tower alone (no caption, no CGI, no CFF)."""
    _, feat, bn = self.image(images)
    return bn if neck == "after" else feat

  def embed_text(self, tokens, token_mask):
    return self.text(tokens, token_mask)

  def prompt(self, batch: int, pseudo: jax.Array | None = None, *, train: bool = False):
    """The prompt's text-tower outputs; with `pseudo` [B, D] it replaces the placeholder X."""
    c = self.config
    ids = jnp.broadcast_to(jnp.asarray(c.prompt_ids, jnp.int32), (batch, len(c.prompt_ids)))
    mask = jnp.broadcast_to(jnp.asarray(c.prompt_mask, jnp.int32), ids.shape)
    inject = None if pseudo is None else (jnp.full((batch,), c.placeholder), pseudo)
    return ids, mask, self.text(ids, mask, inject=inject, deterministic=not train)

  def __call__(self, images, camids=None, tokens=None, token_mask=None, *, train=False):
    """Training forward: everything the losses read (and, at init, every parameter)."""
    c = self.config
    vision, feat, bn = self.image(images, camids, train=train, project_tokens=c.cgi)
    out = {"feat": feat, "logits": self.classifier(bn),
           "image_embedding": vision["embedding"].astype(jnp.float32)}
    if not c.uses_text:
      return out
    pseudo = None
    if c.cgi:
      caption = jax.lax.stop_gradient(self.text(tokens, token_mask)["embedding"])
      pseudo = self.cgi_module(vision["token_embeddings"], caption)
      out["pseudo_token"] = pseudo
    ids, mask, prompt = self.prompt(images.shape[0], pseudo, train=train)
    if c.cgi:
      out["prompt_embedding"] = prompt["embedding"].astype(jnp.float32)
      out["logit_scale"] = self.temperature()
    if c.cff:
      eot = clip.eos_positions(ids, c.clip.text.eos_token_id)
      fused = self.cff_module(prompt["tokens"], mask, eot, vision["tokens"],
                              deterministic=not train)
      out["cff_feat"] = fused
      out["cff_logits"] = self.cff_classifier(
          self.cff_bnneck(fused, use_running_average=not train))
    return out
