"""The ReText train step: every loss of DESIGN.md section 3, the optimizer update and the EMA.

Pure JAX (no TensorFlow, no input pipeline): `make_train_step` returns a function of
(state, batch) that the trainer jits over a mesh. Branches with a zero loss weight are left out
of the traced computation entirely.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from retext_jax import losses
from retext_jax.models.retext import ReText, momentum_params, with_momentum

State = dict[str, Any]


def create_state(model: ReText, tx: optax.GradientTransformation, variables, rng) -> State:
  """The train state as a plain pytree (DESIGN.md section 2)."""
  params = variables["params"]
  state = {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "batch_stats": variables.get("batch_stats", {}),
      "ema": jax.tree_util.tree_map(jnp.copy, momentum_params(params)),
      "opt_state": tx.init(params),
      "rng": rng,
  }
  return state


def add_queue(state: State, size: int, dim: int) -> State:
  if size:
    state = dict(state, queue=losses.queue_init(size, dim))
  return state


def make_train_step(model: ReText, tx: optax.GradientTransformation, loss_cfg: Mapping,
                    schedules: Mapping[str, Any], patch_size: int):
  """Returns train_step(state, batch) -> (state, metrics)."""
  lam_iam = float(loss_cfg["lambda_iam"])
  lam_sp = float(loss_cfg["lambda_sp"])
  lam_rec = float(loss_cfg["lambda_rec"])
  lam_sc = float(loss_cfg["lambda_sc_id"])
  use_text = lam_iam > 0 or lam_rec > 0
  use_momentum = lam_sp > 0 or (lam_iam > 0 and loss_cfg["alpha"] > 0)
  use_singlecam = use_text or lam_sp > 0 or lam_sc > 0

  def loss_fn(params, state, batch, rng):
    variables = {"params": params, "batch_stats": state["batch_stats"]}
    rngs = lambda i: {"dropout": jax.random.fold_in(rng, i)}
    metrics = {}
    out, updates = model.apply(
        variables, batch["multicam/image"], batch.get("multicam/camid"), train=True,
        method=ReText.reid, mutable=["batch_stats"], rngs=rngs(0),
    )
    reid = losses.reid_loss(
        out["logits"], out["feat"], batch["multicam/pid"],
        label_smoothing=loss_cfg["label_smoothing"], margin=loss_cfg["triplet_margin"],
        soft_margin=loss_cfg["soft_margin"],
    )
    metrics.update({"loss/id": reid["id"], "loss/triplet": reid["triplet"]})
    total = reid["id"] + reid["triplet"]
    new_queue = state.get("queue")
    if use_singlecam:
      sc_pid = batch["singlecam/pid"]
      img = model.apply(variables, batch["singlecam/view1"], train=True,
                        method=ReText.embed_image, rngs=rngs(1))
      mom = None
      if use_momentum:
        mom = model.apply({"params": with_momentum(params, state["ema"]),
                           "batch_stats": state["batch_stats"]},
                          batch["singlecam/view2"], train=False, method=ReText.embed_image)
        mom = jax.lax.stop_gradient(mom["emb"])
      if lam_sc > 0:
        logits = model.apply(variables, img["cls"], method=ReText.sc_logits)
        l_sc = losses.cross_entropy_label_smoothing(logits, sc_pid, loss_cfg["label_smoothing"])
        metrics["loss/sc_id"] = l_sc
        total = total + lam_sc * l_sc
      if use_text:
        txt = model.apply(variables, batch["singlecam/tokens"], batch["singlecam/token_mask"],
                          train=True, method=ReText.embed_text, rngs=rngs(2))
      if lam_iam > 0:
        if loss_cfg["matching"] == "sdm":
          l_iam = losses.sdm(img["emb"], txt["emb"], sc_pid, 1.0 / loss_cfg["temperature"])
        else:
          l_iam = losses.identity_aware_matching(
              img["emb"], txt["emb"], sc_pid, loss_cfg["temperature"],
              alpha=loss_cfg["alpha"], momentum_img_emb=mom,
          )
        metrics["loss/iam"] = l_iam
        total = total + lam_iam * l_iam
      if lam_sp > 0:
        queue = state.get("queue")
        l_sp = losses.structure_preserving(
            img["emb"], mom, sc_pid, loss_cfg["sp_temperature"],
            queue_emb=None if queue is None else queue["emb"],
            queue_ids=None if queue is None else queue["ids"],
        )
        if queue is not None:
          new_queue = losses.queue_push(queue, mom, sc_pid)
        metrics["loss/sp"] = l_sp
        total = total + lam_sp * l_sp
      if lam_rec > 0:
        pred = model.apply(variables, batch["singlecam/view1"], batch["singlecam/patch_mask"],
                           txt["states"], batch["singlecam/token_mask"], train=True,
                           method=ReText.reconstruct, rngs=rngs(3))
        l_rec = losses.masked_reconstruction(pred, batch["singlecam/view1"],
                                             batch["singlecam/patch_mask"], patch_size)
        metrics["loss/rec"] = l_rec
        total = total + lam_rec * l_rec
    metrics["loss/total"] = total
    return total, (metrics, updates["batch_stats"], new_queue)

  def train_step(state: State, batch: Mapping[str, jax.Array]):
    rng = jax.random.fold_in(state["rng"], state["step"])
    grads, (metrics, batch_stats, queue) = jax.grad(loss_fn, has_aux=True)(
        state["params"], state, batch, rng
    )
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    ema = optax.incremental_update(momentum_params(params), state["ema"],
                                   step_size=1.0 - loss_cfg["momentum"])
    new_state = dict(state, step=state["step"] + 1, params=params, batch_stats=batch_stats,
                     ema=ema, opt_state=opt_state)
    if queue is not None:
      new_state["queue"] = queue
    metrics["grad_norm"] = optax.global_norm(grads)
    metrics["param_norm"] = optax.global_norm(params)
    for group, sched in schedules.items():
      metrics[f"lr/{group}"] = sched(state["step"])
    return new_state, metrics

  return train_step
