"""ReText's module: a student ViT with BNNeck + ID head, matching projections, a BERT text
encoder and a text-guided reconstruction decoder (the losses are in `method.py`).

The momentum encoder is not a separate module: it is an EMA copy of the student's
`image_encoder` and `image_proj` parameters (`ReTextMethod.ema_keys`), applied through the
same methods. Branches whose loss weight is 0 are not built at all, so they cost neither parameters
nor compute.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from retext_jax.methods import heads
from retext_jax.methods.retext.decoder import TextGuidedDecoder
from retext_jax.models import bert, vit
from retext_jax.models.configs import DictConfig


@dataclasses.dataclass(frozen=True)
class ReTextConfig(DictConfig):
  vit: vit.ViTConfig
  text: bert.BertConfig | None  # None: no text branch (Re-ID only, or images without text)
  num_classes: int  # identities of the multi-camera sources
  num_sc_classes: int = 0  # identities of the captioned set (ID head on images without text)
  embed_dim: int = 256
  use_rec: bool = False
  decoder_width: int = 256
  decoder_depth: int = 2
  decoder_heads: int = 4
  num_masked: int = 0  # patches masked per image for reconstruction (static under jit)
  match_feature: str = "cls"  # what image_proj reads: the "cls" token or the "bnneck" feature

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> ReTextConfig:
    """Inverse of `to_dict` (saved with every checkpoint: tools rebuild the model from it)."""
    text = d.get("text")
    return super().from_dict({**d, "vit": vit.config_from_dict(d["vit"]),
                              "text": None if text is None else bert.config_from_dict(text)})


class ReText(nn.Module):
  config: ReTextConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    c = self.config
    self.image_encoder = vit.ViT(c.vit, dtype=self.dtype)
    self.bnneck = heads.bnneck()
    self.classifier = heads.id_classifier(c.num_classes)
    self.image_proj = nn.Dense(c.embed_dim, dtype=self.dtype)
    if c.num_sc_classes:
      self.sc_classifier = heads.id_classifier(c.num_sc_classes)
    if c.text is not None:
      self.text_encoder = bert.Bert(c.text, dtype=self.dtype)
      self.text_proj = nn.Dense(c.embed_dim, dtype=self.dtype)
    if c.use_rec:
      if c.text is None:
        raise ValueError("text-guided reconstruction needs the text encoder (config.init.text)")
      p = c.vit.patch_size
      self.decoder = TextGuidedDecoder(
          num_patches=c.vit.num_patches, patch_pixels=p * p * 3, width=c.decoder_width,
          depth=c.decoder_depth, num_heads=c.decoder_heads, dtype=self.dtype,
      )

  def _neck(self, images, camids, train: bool):
    camera = camids if self.config.vit.num_cameras else None
    feat = self.image_encoder(images, camera=camera, train=train)["cls"].astype(jnp.float32)
    return feat, self.bnneck(feat, use_running_average=not train)

  def reid(self, images, camids=None, *, train: bool = False):
    """Multi-camera branch: pre-BN feature (triplet), BNNeck feature and ID logits."""
    feat, bn = self._neck(images, camids, train)
    return {"feat": feat, "bn_feat": bn, "logits": self.classifier(bn)}

  def embed_image(self, images, *, train: bool = False):
    """Matching embedding of an image (also the momentum encoder's path). With
    match_feature="bnneck" the projection reads the class token standardised by the BNNeck's
    running statistics (never updated here), as the ID head does."""
    cls = self.image_encoder(images, train=train)["cls"].astype(jnp.float32)
    feat = self.bnneck(cls, use_running_average=True) if self.config.match_feature == "bnneck" \
        else cls
    return {"cls": cls, "emb": self.image_proj(feat).astype(jnp.float32)}

  def sc_logits(self, cls):
    return self.sc_classifier(cls)

  def embed_text(self, tokens, token_mask, *, train: bool = False):
    out = self.text_encoder(tokens, token_mask, train=train)
    return {"states": out["tokens"], "emb": self.text_proj(out["cls"]).astype(jnp.float32)}

  def reconstruct(self, images, patch_mask, text_states, text_mask, *, train: bool = False):
    """Encodes only the visible patches, then predicts every patch's pixels from them + text."""
    out = self.image_encoder(images, patch_mask=patch_mask, num_masked=self.config.num_masked,
                             train=train)
    return self.decoder(out["patch_tokens"], patch_mask, text_states, text_mask,
                        deterministic=not train)

  def features(self, images, neck: str = "after"):
    """Retrieval feature at test time: after the BNNeck (BoT's default) or before it."""
    feat, bn = self._neck(images, None, train=False)
    return bn if neck == "after" else feat

  def __call__(self, images, tokens=None, token_mask=None, patch_mask=None, *, train=False):
    """Touches every branch once (used by `init`)."""
    out = dict(self.reid(images, train=train))
    out.update(img=self.embed_image(images, train=train))
    if self.config.num_sc_classes:
      out.update(sc_logits=self.sc_logits(out["img"]["cls"]))
    if self.config.text is not None:
      out.update(txt=self.embed_text(tokens, token_mask, train=train))
      if self.config.use_rec:
        out.update(rec=self.reconstruct(images, patch_mask, out["txt"]["states"], token_mask,
                                        train=train))
    return out

