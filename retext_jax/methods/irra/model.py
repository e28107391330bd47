"""The dual encoder of text-to-image person retrieval (IRRA's layout): an image tower and a text
tower, each ending in an embedding of the shared matching space, and one ID classifier that
both modalities' embeddings go through.

Two tower pairs, chosen by `config.model.towers`:

* "clip": CLIP's vision and text towers with their own projections (IRRA: ViT-B/16 + CLIP
  text); params `image_encoder`, `text_encoder`.
* "vit_bert": a ViT and a BERT, each followed by a new linear projection to `embed_dim`;
  params `image_encoder`, `image_proj`, `text_encoder`, `text_proj`.

The towers' embeddings (class token / end-of-text token, projected) are returned unnormalised
in float32; the losses and the predict functions normalise them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from retext_jax import errors
from retext_jax.methods import heads
from retext_jax.models import bert, clip, vit
from retext_jax.models.configs import DictConfig

TOWERS = ("clip", "vit_bert")


@dataclasses.dataclass(frozen=True)
class DualEncoderConfig(DictConfig):
  num_classes: int  # training identities (the ID loss on both modalities)
  clip: clip.CLIPConfig | None = None  # towers="clip"
  vit: vit.ViTConfig | None = None  # towers="vit_bert"
  text: bert.BertConfig | None = None
  embed_dim: int = 512  # projection width of the vit_bert towers (CLIP brings its own)

  def __post_init__(self):
    if (self.clip is None) == (self.vit is None or self.text is None):
      raise errors.ConfigError("a dual encoder needs either a CLIP config or a ViT and a BERT")

  @property
  def dim(self) -> int:
    """Width of the matching embedding."""
    return self.clip.projection_dim if self.clip is not None else self.embed_dim

  @classmethod
  def from_dict(cls, d: dict[str, Any]):
    parse = {"clip": clip.config_from_dict, "vit": vit.config_from_dict,
             "text": bert.config_from_dict}
    return super().from_dict(
        {**d, **{k: None if d.get(k) is None else f(d[k]) for k, f in parse.items()}})


class DualEncoder(nn.Module):
  """Image tower, text tower and the shared ID classifier (see the module docstring)."""

  config: DualEncoderConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    c = self.config
    if c.clip is not None:
      self.image_encoder = clip.CLIPVisionTower(c.clip.vision, c.clip.projection_dim, self.dtype)
      self.text_encoder = clip.CLIPTextTower(c.clip.text, c.clip.projection_dim, self.dtype)
    else:
      self.image_encoder = vit.ViT(c.vit, dtype=self.dtype)
      self.image_proj = nn.Dense(c.embed_dim, dtype=self.dtype)
      self.text_encoder = bert.Bert(c.text, dtype=self.dtype)
      self.text_proj = nn.Dense(c.embed_dim, dtype=self.dtype)
    self.classifier = heads.id_classifier(c.num_classes)

  def embed_image(self, images, *, train: bool = False):
    """[B, H, W, 3] -> [B, dim] float32."""
    if self.config.clip is not None:
      emb = self.image_encoder(images, deterministic=not train)["embedding"]
    else:
      emb = self.image_proj(self.image_encoder(images, train=train)["cls"])
    return emb.astype(jnp.float32)

  def embed_text(self, tokens, token_mask, *, train: bool = False):
    """[T, L] tokens and mask -> [T, dim] float32."""
    if self.config.clip is not None:
      emb = self.text_encoder(tokens, token_mask, deterministic=not train)["embedding"]
    else:
      emb = self.text_proj(self.text_encoder(tokens, token_mask, train=train)["cls"])
    return emb.astype(jnp.float32)

  def logits(self, embeddings):
    """ID logits of either modality's embeddings (one classifier for both, as IRRA)."""
    return self.classifier(embeddings)

  def __call__(self, images, tokens, token_mask, *, train: bool = False):
    """Touches every parameter once (used by `init`)."""
    img = self.embed_image(images, train=train)
    txt = self.embed_text(tokens, token_mask, train=train)
    return {"img": img, "txt": txt, "img_logits": self.logits(img),
            "txt_logits": self.logits(txt)}
