"""CosFace with a shape bug deliberately injected in its loss: an internal error (a ValueError
raised inside JAX) that the entry point must show with its traceback, not as a user error."""

from __future__ import annotations

import jax.numpy as jnp

from example_methods.cosface import CosFaceMethod


class BuggyMethod(CosFaceMethod):
  name = "buggy"

  def loss_fn(self, params, state, batch, rng):
    cos = self.cosines(params, batch, rng)  # [C, B]
    wrong = jnp.einsum("cb,cb->b", cos, cos[:, :-1])  # the bug: one sample short
    return wrong.mean(), ({}, {})


METHOD = BuggyMethod
