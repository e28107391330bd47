"""The generic train step: the method's loss, its gradient, the optimizer update and the EMA.

Pure JAX (no TensorFlow, no input pipeline): `make_train_step` returns a function of
(state, batch) that the trainer jits over a mesh. What is specific to a method (its losses,
which parameters the EMA tracks, extra state) comes from the `Method`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from retext_jax.methods.base import Method

State = dict[str, Any]


def ema_subtree(method: Method, params: Mapping[str, Any]) -> dict:
  """The parameter subtrees the method's EMA copy tracks."""
  return {k: params[k] for k in method.ema_keys}


def create_state(method: Method, tx: optax.GradientTransformation, variables, rng) -> State:
  """The train state as a plain pytree: step, params, batch_stats, ema, opt_state, rng and the
  method's extra entries."""
  params = variables["params"]
  return {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "batch_stats": variables.get("batch_stats", {}),
      "ema": jax.tree_util.tree_map(jnp.copy, ema_subtree(method, params)),
      "opt_state": tx.init(params),
      "rng": rng,
      **method.extra_state(),
  }


def make_train_step(method: Method, tx: optax.GradientTransformation,
                    schedules: Mapping[str, Any]):
  """Returns train_step(state, batch) -> (state, metrics)."""

  def train_step(state: State, batch: Mapping[str, jax.Array]):
    rng = jax.random.fold_in(state["rng"], state["step"])
    (loss, (metrics, updates)), grads = jax.value_and_grad(method.loss_fn, has_aux=True)(
        state["params"], state, batch, rng
    )
    opt_updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], opt_updates)
    new_state = {**state, **updates, "step": state["step"] + 1, "params": params,
                 "opt_state": opt_state}
    if method.ema_keys:
      new_state["ema"] = optax.incremental_update(ema_subtree(method, params), state["ema"],
                                                  step_size=1.0 - method.ema_decay)
    metrics = {**metrics, "loss/total": loss}
    metrics["grad_norm"] = optax.tree_utils.tree_norm(grads)
    metrics["param_norm"] = optax.tree_utils.tree_norm(params)
    for group, sched in schedules.items():
      metrics[f"lr/{group}"] = sched(state["step"])
    return new_state, metrics

  return train_step
