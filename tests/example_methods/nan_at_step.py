"""CosFace whose loss is NaN at exactly one step (NAN_STEP, 1-based): for checking that the
trainer stops on it before anything from it is saved, though it is neither a log nor a
checkpoint step."""

from __future__ import annotations

import jax.numpy as jnp

from example_methods.cosface import CosFaceMethod

NAN_STEP = 5


class NanAtStepMethod(CosFaceMethod):
  name = "nan_at_step"

  def loss_fn(self, params, state, batch, rng):
    loss, aux = super().loss_fn(params, state, batch, rng)
    return loss + jnp.where(state["step"] + 1 == NAN_STEP, jnp.nan, 0.0), aux


METHOD = NanAtStepMethod
