"""The IRRA-style baseline of text-to-image person retrieval, as a method.

  L = lambda_sdm L_sdm + lambda_id L_id (+ lambda_itc L_itc)

on identity-grouped batches of image-caption pairs (the `multicam_text` stream: P identities x
K images, one of each image's captions per step):

* L_sdm: IRRA's similarity-distribution matching between the batch's image and text
  embeddings, at the fixed temperature `loss.temperature` (IRRA: 0.02), every same-identity
  pair a positive (`retext_jax.losses.sdm`).
* L_id: cross-entropy of one shared classifier on the image and on the text embeddings,
  averaged over the two (IRRA's `compute_id`; `loss.label_smoothing`, 0 in IRRA).
* L_itc: CLIP's symmetric InfoNCE, one positive per row (off by default, as in IRRA's best
  setting).

IRRA's implicit relation reasoning (masked-language modelling through a cross-modal encoder)
is not implemented: its encoder is used only in training and LCR²S, which this baseline
serves, does not use it. Test-time retrieval: cosine similarity of the normalised embeddings.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from retext_jax import errors, losses
from retext_jax.linalg import l2_normalize
from retext_jax.methods import base
from retext_jax.methods.irra.model import TOWERS, DualEncoder, DualEncoderConfig
from retext_jax.models import pretrained


def towers(config, data: base.DataInfo) -> tuple[dict, dict, object]:
  """(DualEncoderConfig fields, pretrained params, tokenizer) for `config.model.towers`."""
  m = config.model
  if m.towers == "clip":
    if not config.init.clip:
      raise errors.ConfigError("config.model.towers='clip' needs config.init.clip (a converted "
                               "or Hugging Face CLIP folder)")
    params, ccfg, tokenizer = pretrained.clip_model(config.init.clip, m)
    fields = {"clip": ccfg}
    loaded = {"image_encoder": params["vision"], "text_encoder": params["text"]}
  elif m.towers == "vit_bert":
    if not config.init.text:
      raise errors.ConfigError("config.model.towers='vit_bert' needs config.init.text (a BERT "
                               "folder, a converted folder, or 'minilm')")
    vit_cfg, loaded = pretrained.image_tower(config)
    text_cfg, loaded["text_encoder"], tokenizer = pretrained.text_encoder(config.init.text)
    fields = {"vit": vit_cfg, "text": text_cfg, "embed_dim": m.embed_dim}
  else:
    raise errors.ConfigError(f"config.model.towers={m.towers!r}: expected one of {TOWERS}")
  return {**fields, "num_classes": data.num_classes}, loaded, tokenizer


class IRRAMethod(base.Method):
  name = "irra"
  model_config_cls = DualEncoderConfig
  backbone_keys = ("image_encoder", "text_encoder")
  streams = (base.MULTICAM_TEXT,)

  @classmethod
  def create(cls, config, data: base.DataInfo) -> base.Init:
    fields, loaded, tokenizer = towers(config, data)
    model_config = cls.model_config_cls(**fields, **cls.model_fields(config))
    return base.Init(cls(config, model_config), loaded, tokenizer)

  @classmethod
  def model_fields(cls, config) -> dict:
    """Model-config fields beyond the towers' (a subclass's own modules)."""
    return {}

  def make_module(self) -> DualEncoder:
    return DualEncoder(self.model_config, dtype=self.dtype)

  def init_inputs(self) -> tuple:
    h, w = self.config.input.image_size
    tokens = jnp.zeros((2, self.config.input.max_text_len), jnp.int32)
    return jnp.zeros((2, h, w, 3), jnp.float32), tokens, jnp.ones_like(tokens)

  def embed(self, params, batch, rng) -> tuple[jax.Array, jax.Array]:
    """Training-mode image and text embeddings of a batch."""
    variables = {"params": params}
    img = self.model.apply(variables, batch["multicam/image"], train=True,
                           method=DualEncoder.embed_image,
                           rngs={"dropout": jax.random.fold_in(rng, 0)})
    txt = self.model.apply(variables, batch["multicam/tokens"], batch["multicam/token_mask"],
                           train=True, method=DualEncoder.embed_text,
                           rngs={"dropout": jax.random.fold_in(rng, 1)})
    return img, txt

  def matching_losses(self, params, img, txt, pid) -> tuple[jax.Array, dict]:
    """The weighted SDM + ID (+ ITC) of image and text features; (total, metrics)."""
    lc = self.config.loss
    metrics = {"loss/sdm": losses.sdm(img, txt, pid, 1.0 / lc.temperature)}
    logits = lambda e: self.model.apply({"params": params}, e, method=DualEncoder.logits)
    metrics["loss/id"] = 0.5 * sum(
        losses.cross_entropy_label_smoothing(logits(e), pid, lc.label_smoothing)
        for e in (img, txt))
    total = lc.lambda_sdm * metrics["loss/sdm"] + lc.lambda_id * metrics["loss/id"]
    if lc.lambda_itc > 0:
      metrics["loss/itc"] = losses.itc(img, txt, lc.temperature)
      total = total + lc.lambda_itc * metrics["loss/itc"]
    return total, metrics

  def loss_fn(self, params, state, batch, rng):
    img, txt = self.embed(params, batch, rng)
    total, metrics = self.matching_losses(params, img, txt, batch["multicam/pid"])
    return total, (metrics, {})

  def predict_fns(self) -> dict:
    model = self.model

    def image(v, x):
      return l2_normalize(model.apply(v, x, method=DualEncoder.embed_image))

    def text(v, tokens, mask):
      return l2_normalize(model.apply(v, tokens, mask, method=DualEncoder.embed_text))

    # The image embedding doubles as the image-to-image retrieval feature.
    return {base.IMAGE_EMBED: image, base.TEXT_EMBED: text, base.REID: image}
