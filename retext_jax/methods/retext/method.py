"""ReText as a method: its model, its four losses, the momentum encoder and the queue.

The paper's formulas are not public; this is our reading, each choice configurable:

  L = L_reid + lambda_iam L_iam + lambda_sp L_sp + lambda_rec L_rec (+ lambda_sc_id L_sc_id)

* L_reid (multi-camera batch): ID cross-entropy with label smoothing on the BNNeck feature +
  batch-hard triplet on the pre-BN feature (BoT / TransReID).
* L_iam (captioned batch): identity-aware image-text matching; soft targets mix the identity
  labels with the momentum encoder's image-text similarities (`loss.alpha`), or IRRA's SDM
  (`loss.matching="sdm"`).
* L_sp: InfoNCE between the student embedding of one view and the momentum embedding of the
  other (positives: same identity), with an optional queue of past momentum embeddings.
* L_rec: pixels of masked patches predicted from the visible ones and the caption (MSE on
  per-patch normalised pixels), through the text-guided decoder.
* L_sc_id: an ID loss on the captioned images without their text (an ablation control).

A weight of 0 removes its branch from the model and from the traced step. The momentum encoder
is the EMA (`loss.momentum`) of `image_encoder` and `image_proj`. Formulas: `retext_jax/losses.py`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from input_pipeline.masking import num_masked
from retext_jax import errors, losses
from retext_jax.linalg import l2_normalize
from retext_jax.methods import base
from retext_jax.methods.retext.model import ReText, ReTextConfig
from retext_jax.models import pretrained


class ReTextMethod(base.Method):
  name = "retext"
  model_config_cls = ReTextConfig
  ema_keys = ("image_encoder", "image_proj")
  backbone_keys = ("image_encoder", "text_encoder")

  @classmethod
  def create(cls, config, data: base.DataInfo) -> base.Init:
    lc = config.loss
    vit_cfg, loaded = pretrained.image_tower(config, data.num_cameras)
    if config.model.match_feature not in ("cls", "bnneck"):
      raise errors.ConfigError(f"config.model.match_feature={config.model.match_feature!r}: "
                               "expected 'cls' or 'bnneck'")
    if lc.lambda_rec > 0 and vit_cfg.patch_stride != vit_cfg.patch_size:
      raise errors.ConfigError("lambda_rec > 0 reconstructs non-overlapping patches: set "
                               "config.model.stride equal to config.model.patch")
    text_cfg = tokenizer = None
    if lc.lambda_iam > 0 or lc.lambda_rec > 0:
      if not config.init.text:
        raise errors.ConfigError(
            "lambda_iam or lambda_rec > 0 needs a text encoder: set config.init.text (a BERT "
            "folder, a converted folder, or 'minilm')")
      text_cfg, loaded["text_encoder"], tokenizer = pretrained.text_encoder(config.init.text)
    mcfg = ReTextConfig(
        vit=vit_cfg, text=text_cfg, num_classes=data.num_classes,
        num_sc_classes=data.num_sc_classes if lc.lambda_sc_id > 0 else 0,
        embed_dim=config.model.embed_dim, use_rec=lc.lambda_rec > 0,
        decoder_width=config.model.decoder_width, decoder_depth=config.model.decoder_depth,
        decoder_heads=config.model.decoder_heads,
        num_masked=num_masked(config.input.mask_ratio, vit_cfg.num_patches),
        match_feature=config.model.match_feature,
    )
    return base.Init(cls(config, mcfg), loaded, tokenizer)

  @classmethod
  def fit_to_data(cls, config, data: base.DataInfo) -> tuple[dict, str]:
    """Without captioned single-camera images (e.g. your own multi-camera folder with no
    captions), the text and single-camera losses are switched off: Re-ID alone, the BoT-style
    baseline with this config's backbone and recipe."""
    on = [f"loss.lambda_{k}" for k in ("iam", "sp", "rec", "sc_id")
          if config.loss[f"lambda_{k}"] > 0]
    if data.num_sc_classes or not on:
      return {}, ""
    return ({k: 0.0 for k in on},
            "config.data.sources has no captioned single-camera image (part='singlecam' with "
            "captions): ReText trains on the Re-ID data alone (BoT-style)")

  def make_module(self) -> ReText:
    return ReText(self.model_config, dtype=self.dtype)

  def with_num_masked(self, count: int) -> ReTextMethod:
    """The same method masking `count` patches (a static shape; parameters do not depend on
    it): for reconstructions at another mask ratio."""
    return type(self)(self.config, dataclasses.replace(self.model_config, num_masked=count))

  def init_inputs(self) -> tuple:
    h, w = self.config.input.image_size
    img = jnp.zeros((2, h, w, 3), jnp.float32)
    tokens = jnp.zeros((2, self.config.input.max_text_len), jnp.int32)
    n = self.model_config.vit.num_patches
    patch_mask = jnp.zeros((2, n), bool).at[:, :self.model_config.num_masked].set(True)
    return img, tokens, jnp.ones_like(tokens), patch_mask

  # ------------------------------------------------------------------------------- training

  @property
  def _weights(self) -> dict[str, float]:
    lc = self.config.loss
    return {k: float(lc[f"lambda_{k}"]) for k in ("iam", "sp", "rec", "sc_id")}

  @property
  def streams(self) -> tuple[str, ...]:
    return (base.MULTICAM, base.SINGLECAM) if any(v > 0 for v in self._weights.values()) \
        else (base.MULTICAM,)

  @property
  def ema_decay(self) -> float:
    return float(self.config.loss.momentum)

  def extra_state(self) -> dict:
    lc = self.config.loss
    if lc.lambda_sp > 0 and lc.queue_size:
      return {"queue": losses.queue_init(lc.queue_size, self.model_config.embed_dim)}
    return {}

  def loss_fn(self, params, state, batch, rng):
    lc, w = self.config.loss, self._weights
    model = self.model
    use_text = w["iam"] > 0 or w["rec"] > 0
    use_momentum = w["sp"] > 0 or (w["iam"] > 0 and lc.alpha > 0)
    variables = {"params": params, "batch_stats": state["batch_stats"]}
    rngs = lambda i: {"dropout": jax.random.fold_in(rng, i)}
    metrics = {}
    out, mutated = model.apply(
        variables, batch["multicam/image"], batch.get("multicam/camid"), train=True,
        method=ReText.reid, mutable=["batch_stats"], rngs=rngs(0),
    )
    reid = losses.reid_loss(out["logits"], out["feat"], batch["multicam/pid"],
                            label_smoothing=lc.label_smoothing, margin=lc.triplet_margin,
                            soft_margin=lc.soft_margin)
    metrics.update({"loss/id": reid["id"], "loss/triplet": reid["triplet"]})
    total = reid["id"] + reid["triplet"]
    updates = {"batch_stats": mutated["batch_stats"]}
    if base.SINGLECAM not in self.streams:
      return total, (metrics, updates)

    sc_pid = batch["singlecam/pid"]
    img = model.apply(variables, batch["singlecam/view1"], train=True, method=ReText.embed_image,
                      rngs=rngs(1))
    mom = None
    if use_momentum:
      momentum = {"params": {**params, **jax.lax.stop_gradient(state["ema"])},
                  "batch_stats": state["batch_stats"]}
      mom = model.apply(momentum, batch["singlecam/view2"], train=False,
                        method=ReText.embed_image)
      mom = jax.lax.stop_gradient(mom["emb"])
    if w["sc_id"] > 0:
      logits = model.apply(variables, img["cls"], method=ReText.sc_logits)
      metrics["loss/sc_id"] = losses.cross_entropy_label_smoothing(logits, sc_pid,
                                                                   lc.label_smoothing)
      total = total + w["sc_id"] * metrics["loss/sc_id"]
    if use_text:
      txt = model.apply(variables, batch["singlecam/tokens"], batch["singlecam/token_mask"],
                        train=True, method=ReText.embed_text, rngs=rngs(2))
    if w["iam"] > 0:
      if lc.matching == "sdm":
        l_iam = losses.sdm(img["emb"], txt["emb"], sc_pid, 1.0 / lc.temperature)
      else:
        l_iam = losses.identity_aware_matching(img["emb"], txt["emb"], sc_pid, lc.temperature,
                                               alpha=lc.alpha, momentum_img_emb=mom)
      metrics["loss/iam"] = l_iam
      total = total + w["iam"] * l_iam
    if w["sp"] > 0:
      queue = state.get("queue")
      metrics["loss/sp"] = losses.structure_preserving(
          img["emb"], mom, sc_pid, lc.sp_temperature,
          queue_emb=None if queue is None else queue["emb"],
          queue_ids=None if queue is None else queue["ids"],
      )
      if queue is not None:
        updates["queue"] = losses.queue_push(queue, mom, sc_pid)
      total = total + w["sp"] * metrics["loss/sp"]
    if w["rec"] > 0:
      pred = model.apply(variables, batch["singlecam/view1"], batch["singlecam/patch_mask"],
                         txt["states"], batch["singlecam/token_mask"], train=True,
                         method=ReText.reconstruct, rngs=rngs(3))
      metrics["loss/rec"] = losses.masked_reconstruction(
          pred, batch["singlecam/view1"], batch["singlecam/patch_mask"],
          self.model_config.vit.patch_size)
      total = total + w["rec"] * metrics["loss/rec"]
    return total, (metrics, updates)

  # ------------------------------------------------------------------------------ test time

  def predict_fns(self) -> dict:
    model, neck = self.model, self.config.eval.neck
    fns = {base.REID: lambda v, x: l2_normalize(
        model.apply(v, x, neck, method=ReText.features))}
    if self.model_config.text is None:
      return fns

    def text_embed(v, tokens, mask):
      return l2_normalize(model.apply(v, tokens, mask, method=ReText.embed_text)["emb"])

    fns[base.IMAGE_EMBED] = lambda v, x: l2_normalize(
        model.apply(v, x, method=ReText.embed_image)["emb"])
    fns[base.TEXT_EMBED] = text_embed
    if self.model_config.use_rec:
      def reconstruct(v, x, tokens, mask, patch_mask):
        states = model.apply(v, tokens, mask, method=ReText.embed_text)["states"]
        return model.apply(v, x, patch_mask, states, mask, method=ReText.reconstruct)

      fns[base.RECONSTRUCT] = reconstruct
    return fns
