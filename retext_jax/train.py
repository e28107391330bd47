"""The ReText trainer: one jitted step over a mesh, orbax checkpoints, clu metrics, evaluation.

`train_and_evaluate(config, workdir)` is the whole run (resumes from the workdir if it holds a
checkpoint); `evaluate(config, workdir)` restores a checkpoint on whatever devices are present
and writes `results.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions

from retext_jax import checkpointing, data, evaluators, inference, optim, sharding, tokenizers
from retext_jax.models import pretrained
from retext_jax.models.retext import BACKBONE_KEYS, ReText, ReTextConfig
from retext_jax.train_step import add_queue, create_state, make_train_step


class NonFiniteLossError(FloatingPointError):
  pass


def build_model(config, sources: data.Sources):
  """Model, its config, the tokenizer (or None) and pretrained params to load."""
  lc = config.loss
  needs_text = lc.lambda_iam > 0 or lc.lambda_rec > 0
  vit_cfg, vit_params = pretrained.image_encoder(config.model, config.input.image_size,
                                                 config.init.image,
                                                 num_cameras=sources.num_cameras)
  if lc.lambda_rec > 0 and vit_cfg.patch_stride != vit_cfg.patch_size:
    raise ValueError("lambda_rec > 0 reconstructs non-overlapping patches: set "
                     "config.model.stride equal to config.model.patch")
  text_cfg = text_params = tokenizer = None
  if needs_text:
    text_cfg, text_params, tokenizer = pretrained.text_encoder(config.init.text)
  mcfg = ReTextConfig(
      vit=vit_cfg, text=text_cfg, num_classes=sources.num_classes,
      num_sc_classes=sources.num_sc_classes if lc.lambda_sc_id > 0 else 0,
      embed_dim=config.model.embed_dim, use_rec=lc.lambda_rec > 0,
      decoder_width=config.model.decoder_width, decoder_depth=config.model.decoder_depth,
      decoder_heads=config.model.decoder_heads,
      num_masked=int(round(config.input.mask_ratio * vit_cfg.num_patches)),
  )
  model = ReText(mcfg, dtype=jnp.dtype(config.model.dtype))
  loaded = {k: v for k, v in (("image_encoder", vit_params), ("text_encoder", text_params))
            if v is not None}
  return model, tokenizer, loaded


def _dummy_inputs(config, model: ReText):
  h, w = config.input.image_size
  img = jnp.zeros((2, h, w, 3), jnp.float32)
  tokens = jnp.zeros((2, config.input.max_text_len), jnp.int32)
  n = model.config.vit.num_patches
  patch_mask = jnp.zeros((2, n), bool).at[:, :model.config.num_masked].set(True)
  return img, tokens, jnp.ones_like(tokens), patch_mask


def init_state(config, model: ReText, tx, loaded: dict, mesh):
  """Initialises (or loads pretrained weights into) the sharded train state."""
  rng = jax.random.key(config.seed)
  inputs = _dummy_inputs(config, model)

  def init_fn(rng):
    variables = model.init({"params": rng, "dropout": rng}, *inputs, train=False)
    params = _merge(variables["params"], loaded)
    state = create_state(model, tx, {**variables, "params": params}, jax.random.fold_in(rng, 1))
    return add_queue(state, config.loss.queue_size if config.loss.lambda_sp > 0 else 0,
                     config.model.embed_dim)

  abstract = jax.eval_shape(init_fn, rng)
  shardings = sharding.state_shardings(abstract, mesh, fsdp=config.mesh.fsdp)
  with jax.set_mesh(mesh):
    state = jax.jit(init_fn, out_shardings=shardings)(rng)
  return state, shardings


def _merge(init: dict, loaded: dict) -> dict:
  """Pretrained leaves replace initial ones; leaves absent from the checkpoint keep their init."""
  out = dict(init)
  for k, v in loaded.items():
    out[k] = _merge(init[k], v) if isinstance(v, dict) and k in init else v
  return out


def _meta(config, model: ReText, step: int, metrics: dict, initial: dict | None) -> dict:
  """What is saved beside the state: enough to rebuild the model without the training data."""
  return {"step": int(step), "config": config.to_dict(), "config_name": config.name,
          "model": model.config.to_dict(), "metrics": metrics, "initial": initial}


def _check_finite(step: int, metrics: dict) -> None:
  """Stops on a NaN/Inf loss (or norm) before anything from this step is saved."""
  bad = sorted((k for k, v in metrics.items() if not np.all(np.isfinite(v))),
               key=lambda k: not k.startswith("loss/"))
  if bad:
    raise NonFiniteLossError(
        f"non-finite loss at step {step}: " + ", ".join(f"{k}={metrics[k]}" for k in bad)
        + "; the last good checkpoint is left intact"
    )


def _predict_fn(model: ReText, mesh, eval_cfg):
  @jax.jit
  def features(state, images):
    return model.apply(inference.eval_variables(state, eval_cfg.features), images, eval_cfg.neck,
                       method=ReText.features)

  def predict(state, images):
    return features(state, sharding.global_batch({"x": images}, mesh)["x"])

  return predict


def _flatten(results: dict) -> dict[str, float]:
  return {f"{t}/{k}": v for t, r in results.items() for k, v in r.items()}


def _headline(results: dict, key: str) -> float:
  return results["average" if "average" in results else next(iter(results))][key]


def _check_batch_sizes(config, mesh) -> None:
  """Global batches are split along `data`: each must divide by the device count."""
  n = mesh.shape[sharding.DATA]
  sizes = {"input.multicam_p * input.multicam_k": config.input.multicam_p * config.input.multicam_k,
           "input.singlecam_batch_size": config.input.singlecam_batch_size,
           "input.eval_batch": config.input.eval_batch}
  bad = [f"{k}={v}" for k, v in sizes.items() if v % n]
  if bad:
    raise ValueError(f"batch sizes must be multiples of the {n} devices: " + ", ".join(bad))


@dataclasses.dataclass
class _Run:
  """Everything training and evaluation share: built once from the config."""

  mesh: Any
  sources: data.Sources
  model: ReText
  tokenizer: Any
  tx: Any
  schedules: dict
  state: dict
  shardings: Any
  ckpt: checkpointing.Checkpointer
  predict: Any  # jitted feature extractor, compiled once

  def evaluate(self, config, state) -> dict:
    return evaluators.evaluate_all(lambda x: self.predict(state, x), self.sources.targets,
                                   data.input_config(config), config.input.eval_batch,
                                   config.eval.max_rank)


def _setup(config, workdir: str) -> _Run:
  mesh = sharding.make_mesh(config.mesh.num_devices or None)
  _check_batch_sizes(config, mesh)
  sources = data.load_sources(config)
  model, tokenizer, loaded = build_model(config, sources)
  tx, schedules = optim.make_optimizer(config.optim, config.total_steps, BACKBONE_KEYS)
  state, shardings = init_state(config, model, tx, loaded, mesh)
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints, config.best_metric or None)
  return _Run(mesh, sources, model, tokenizer, tx, schedules, state, shardings, ckpt,
              _predict_fn(model, mesh, config.eval))


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains, evaluates on the targets, writes results.json; returns the final metrics."""
  os.makedirs(workdir, exist_ok=True)
  run = _setup(config, workdir)
  mesh, sources, model, state, shardings, ckpt = (run.mesh, run.sources, run.model, run.state,
                                                  run.shardings, run.ckpt)
  start, initial = ckpt.latest_step() or 0, None
  if start:
    state, meta = ckpt.restore(checkpointing.abstract_with_shardings(state, shardings), start)
    initial = meta.get("initial")
    logging.info("resumed from %s at step %d", workdir, start)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    if run.tokenizer is not None:  # tools that embed text read it from here
      tokenizers.copy_tokenizer_files(run.tokenizer.source,
                                      os.path.join(workdir, inference.TOKENIZER_DIR))

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  if start == 0:
    parameter_overview.log_parameter_overview(state["params"])
    writer.write_hparams(_flat_config(config))
  step_fn = jax.jit(
      make_train_step(model, run.tx, config.loss, run.schedules, model.config.vit.patch_size),
      in_shardings=(shardings, sharding.batch_sharding(mesh)),
      out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0,
  )
  train_iter = data.train_iterator(config, sources, run.tokenizer, start)
  report = periodic_actions.ReportProgress(num_train_steps=config.total_steps, writer=writer,
                                           every_steps=config.log_every)
  evaluate_now = lambda s: run.evaluate(config, s)

  if start == 0 and config.eval_every:
    initial = evaluate_now(state)  # the untrained model: the baseline training must beat
    writer.write_scalars(0, {f"eval/{k}": v for k, v in _flatten(initial).items()})
    logging.info("step 0 (untrained) %s", _summary(initial))
  results, step = {}, start
  with checkpointing.StopSignal() as stop, metric_writers.ensure_flushes(writer):
    while step < config.total_steps:
      batch = sharding.global_batch(next(train_iter), mesh)
      with jax.set_mesh(mesh):
        state, metrics = step_fn(state, batch)
      step += 1
      metrics = jax.device_get(metrics)
      _check_finite(step, metrics)
      report(step)
      if step % config.log_every == 0 or step == config.total_steps:
        writer.write_scalars(step, {k: float(v) for k, v in metrics.items()})
      if config.eval_every and (step % config.eval_every == 0 or step == config.total_steps):
        with report.timed("eval"):
          results = evaluate_now(state)
        writer.write_scalars(step, {f"eval/{k}": v for k, v in _flatten(results).items()})
        logging.info("step %d %s", step, _summary(results))
        if config.best_metric:
          ckpt.save_best(step, state, _meta(config, model, step, results, initial),
                         {config.best_metric: _headline(results, config.best_metric)})
      if step % config.checkpoint_every == 0 or step == config.total_steps or stop:
        ckpt.save(step, state, _meta(config, model, step, results, initial))
      if stop:
        logging.warning("signal %d received: saved step %d and stopping", stop.received, step)
        break
  ckpt.close()
  if step < config.total_steps:  # stopped by a signal
    return {}
  if not results:  # resumed at the final step, or evaluation switched off during training
    results = evaluate_now(state)
  final = {"config_name": config.name, "step": step, "targets": results, "initial": initial}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(final, f, indent=2)
  print(f"[{config.name}] step {step}: {_summary(results)}")
  return final


def evaluate(config, workdir: str, which: str = "latest") -> dict:
  """Restores a checkpoint (written on any device count) and evaluates it on the targets."""
  run = _setup(config, workdir)
  state, meta = run.ckpt.restore(
      checkpointing.abstract_with_shardings(run.state, run.shardings), which=which)
  run.ckpt.close()
  results = run.evaluate(config, state)
  final = {"config_name": config.name, "step": meta["step"], "targets": results,
           "checkpoint": which}
  with open(os.path.join(workdir, f"results_eval_{which}.json"), "w") as f:
    json.dump(final, f, indent=2)
  print(f"[{config.name}] checkpoint step {meta['step']}: {_summary(results)}")
  return final


def _summary(results: dict) -> str:
  return "; ".join(
      f"{t}: rank-1 {r['rank1']:.1%} mAP {r['mAP']:.1%} mINP {r['mINP']:.1%}"
      for t, r in results.items()
  )


def _flat_config(config) -> dict[str, Any]:
  out = {}

  def walk(prefix, node):
    for k, v in node.items():
      if hasattr(v, "items"):
        walk(f"{prefix}{k}.", v)
      elif isinstance(v, (int, float, str, bool)):
        out[f"{prefix}{k}"] = v
  walk("", config)
  return out

