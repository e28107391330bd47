"""Patch masks for masked-image modelling: how many patches a ratio hides, and random masks.

The one place the masked count is computed: the train pipeline, the models that gather the
visible patches (their count is static under jit) and the reconstruction pictures all call
`num_masked`, so they cannot disagree. Pure numpy (no TensorFlow, no JAX).
"""

from __future__ import annotations

import math

import numpy as np


def num_masked(ratio: float, num_patches: int) -> int:
  """Patches hidden per image: `ratio * num_patches` rounded half up (52.5 -> 53).

  Half up, not Python's `round` (half to even, 52.5 -> 52), so the count grows with the ratio.
  """
  return int(math.floor(ratio * num_patches + 0.5))


def random_patch_mask(rng: np.random.Generator, batch: int, num_patches: int,
                      count: int) -> np.ndarray:
  """bool [batch, num_patches] with exactly `count` True (masked) per row, uniformly placed."""
  order = np.argsort(rng.random((batch, num_patches)), axis=1)
  mask = np.zeros((batch, num_patches), bool)
  np.put_along_axis(mask, order[:, :count], True, axis=1)
  return mask
