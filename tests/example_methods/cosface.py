"""A method the trainer has never heard of: a ViT trained with a CosFace (large-margin cosine)
loss on the multi-camera stream, no BNNeck, no batch statistics, no EMA.

    logits_ij = s * (cos(f_i, w_j) - m * [j = y_i]),   L = cross-entropy(logits, y)
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from retext_jax.linalg import l2_normalize
from retext_jax.methods import base
from retext_jax.models import pretrained, vit
from retext_jax.models.configs import DictConfig

SCALE, MARGIN = 16.0, 0.2


@dataclasses.dataclass(frozen=True)
class CosFaceConfig(DictConfig):
  vit: vit.ViTConfig
  num_classes: int

  @classmethod
  def from_dict(cls, d):
    return super().from_dict({**d, "vit": vit.config_from_dict(d["vit"])})


class CosFace(nn.Module):
  config: CosFaceConfig

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    feat = vit.ViT(self.config.vit, name="image_encoder")(images, train=train)["cls"]
    weights = self.param("class_weights", nn.initializers.normal(0.01),
                         (self.config.num_classes, feat.shape[-1]))
    return l2_normalize(feat), l2_normalize(weights) @ l2_normalize(feat).T


def cosface_loss(cosines: jax.Array, labels: jax.Array) -> jax.Array:
  """cosines [C, B] (class x sample)."""
  onehot = jax.nn.one_hot(labels, cosines.shape[0]).T
  logits = SCALE * (cosines - MARGIN * onehot)
  return jnp.mean(optax.softmax_cross_entropy(logits.T, onehot.T))


class CosFaceMethod(base.Method):
  name = "cosface"
  model_config_cls = CosFaceConfig
  backbone_keys = ("image_encoder",)
  streams = (base.MULTICAM,)

  @classmethod
  def create(cls, config, data):
    vit_cfg, loaded = pretrained.image_tower(config)
    return base.Init(cls(config, CosFaceConfig(vit_cfg, data.num_classes)), loaded)

  def make_module(self):
    return CosFace(self.model_config)

  def init_inputs(self):
    h, w = self.config.input.image_size
    return (jnp.zeros((2, h, w, 3)),)

  def cosines(self, params, batch, rng):
    return self.model.apply({"params": params}, batch["multicam/image"], train=True,
                            rngs={"dropout": rng})[1]

  def loss_fn(self, params, state, batch, rng):
    loss = cosface_loss(self.cosines(params, batch, rng), batch["multicam/pid"])
    return loss, ({"loss/cosface": loss}, {})

  def predict_fns(self):
    return {base.REID: lambda v, x: self.model.apply(v, x)[0]}


METHOD = CosFaceMethod
