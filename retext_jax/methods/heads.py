"""Re-ID heads shared by the image Re-ID methods: the BNNeck and the ID classifier (BoT).

BoT's BNNeck puts a BatchNorm without shift between the feature the triplet loss sees and the
one the ID classifier (bias-free, small init) sees; test-time retrieval uses either.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def bnneck(name: str | None = None) -> nn.BatchNorm:
  return nn.BatchNorm(use_bias=False, momentum=0.9, epsilon=1e-5, dtype=jnp.float32, name=name)


def id_classifier(num_classes: int, name: str | None = None) -> nn.Dense:
  return nn.Dense(num_classes, use_bias=False, kernel_init=nn.initializers.normal(0.001),
                  name=name)
