"""The BoT / TransReID strong baseline: a ViT, a BNNeck, ID cross-entropy with label smoothing
on the BNNeck feature and batch-hard triplet on the feature before it (Luo et al. 2019; He et
al. 2021 for the ViT, its overlapping patches and camera embedding). Multi-camera data only;
it is also the "Re-ID only" row of the ablations. The whole method is this file.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from retext_jax import losses
from retext_jax.linalg import l2_normalize
from retext_jax.methods import base, heads
from retext_jax.models import pretrained, vit
from retext_jax.models.configs import DictConfig


@dataclasses.dataclass(frozen=True)
class BoTConfig(DictConfig):
  vit: vit.ViTConfig
  num_classes: int

  @classmethod
  def from_dict(cls, d: dict) -> BoTConfig:
    return super().from_dict({**d, "vit": vit.config_from_dict(d["vit"])})


class BoT(nn.Module):
  config: BoTConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.image_encoder = vit.ViT(self.config.vit, dtype=self.dtype)
    self.bnneck = heads.bnneck()
    self.classifier = heads.id_classifier(self.config.num_classes)

  def __call__(self, images, camids=None, *, train: bool = False):
    """Pre-BN feature (triplet), BNNeck feature (retrieval) and ID logits."""
    camera = camids if self.config.vit.num_cameras else None
    feat = self.image_encoder(images, camera=camera, train=train)["cls"].astype(jnp.float32)
    bn = self.bnneck(feat, use_running_average=not train)
    return {"feat": feat, "bn_feat": bn, "logits": self.classifier(bn)}


class BoTMethod(base.Method):
  name = "bot"
  model_config_cls = BoTConfig
  backbone_keys = ("image_encoder",)
  streams = (base.MULTICAM,)

  @classmethod
  def create(cls, config, data: base.DataInfo) -> base.Init:
    vit_cfg, loaded = pretrained.image_tower(config, data.num_cameras)
    return base.Init(cls(config, BoTConfig(vit_cfg, data.num_classes)), loaded)

  def make_module(self) -> BoT:
    return BoT(self.model_config, dtype=self.dtype)

  def init_inputs(self) -> tuple:
    h, w = self.config.input.image_size
    return jnp.zeros((2, h, w, 3), jnp.float32), jnp.zeros((2,), jnp.int32)

  def loss_fn(self, params, state, batch, rng):
    lc = self.config.loss
    out, mutated = self.model.apply(
        {"params": params, "batch_stats": state["batch_stats"]}, batch["multicam/image"],
        batch.get("multicam/camid"), train=True, mutable=["batch_stats"],
        rngs={"dropout": rng})
    reid = losses.reid_loss(out["logits"], out["feat"], batch["multicam/pid"],
                            label_smoothing=lc.label_smoothing, margin=lc.triplet_margin,
                            soft_margin=lc.soft_margin)
    metrics = {"loss/id": reid["id"], "loss/triplet": reid["triplet"]}
    return reid["id"] + reid["triplet"], (metrics, {"batch_stats": mutated["batch_stats"]})

  def predict_fns(self) -> dict:
    after = self.config.eval.neck == "after"
    return {base.REID: lambda v, x: l2_normalize(
        self.model.apply(v, x)["bn_feat" if after else "feat"])}
