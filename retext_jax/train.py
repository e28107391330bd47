"""The trainer: one jitted step over a mesh, orbax checkpoints, clu metrics, evaluators.

Generic over methods (`retext_jax.methods`, chosen by `config.method`): the method builds the
model, owns the loss and says which streams it reads, which parameters its EMA tracks and which
are pretrained backbones, and whether it trains in stages (a teacher, then a student, each in
its own workdir). `train_and_evaluate(config, workdir)` is the whole run (every stage resumes
from its workdir's checkpoints); `evaluate(config, workdir)` rebuilds the model from a
checkpoint alone (no training data, no init files, no optimizer) and runs `config.evals`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions

from retext_jax import (
    checkpointing,
    data,
    errors,
    eval_images,
    evaluators,
    inference,
    methods,
    optim,
    sharding,
    tokenizers,
)
from retext_jax.methods.base import MULTICAM, MULTICAM_TEXT, SINGLECAM, Method
from retext_jax.models import pretrained
from retext_jax.protocols import SCALARS
from retext_jax.train_step import create_state, make_train_step


def init_state(config, method: Method, tx, loaded: dict, mesh):
  """Initialises (and loads pretrained towers into) the sharded train state."""
  rng = jax.random.key(config.seed)
  if loaded:  # shape mismatches fail here, with every offending path named
    _, report = pretrained.merge(jax.eval_shape(method.init_variables, rng)["params"], loaded)
    pretrained.log_merge(report)

  def init_fn(rng):
    variables = method.init_variables(rng)
    params, _ = pretrained.merge(variables["params"], loaded)
    return create_state(method, tx, {**variables, "params": params}, jax.random.fold_in(rng, 1))

  abstract = jax.eval_shape(init_fn, rng)
  shardings = sharding.state_shardings(abstract, mesh, fsdp=config.mesh.fsdp)
  with jax.set_mesh(mesh):
    state = jax.jit(init_fn, out_shardings=shardings)(rng)
  frozen = method.frozen_state()
  if frozen:  # placed as they are (not traced into the init function as constants)
    frozen_shardings = sharding.state_shardings(
        jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), frozen), mesh,
        fsdp=config.mesh.fsdp)
    state = {**state, **jax.device_put(frozen, frozen_shardings)}
    shardings = {**shardings, **frozen_shardings}
  return state, shardings


def _meta(run: _Run, step: int, metrics: dict, initial: dict | None, history: list) -> dict:
  """What is saved beside the state: enough to rebuild the model without the training data,
  and the evaluations so far (a resumed run keeps its learning curve)."""
  return {"step": int(step), "config": run.config.to_dict(), "config_name": run.config.name,
          "method": run.config.method, "model": run.method.model_config.to_dict(),
          "tokenizer_kind": run.tokenizer.kind if run.tokenizer is not None else None,
          "metrics": metrics, "initial": initial, "history": history}


def _check_finite(step: int, metrics: dict) -> None:
  """Stops on a NaN/Inf loss (or norm) before anything from this step is saved."""
  bad = sorted((k for k, v in metrics.items() if not np.all(np.isfinite(v))),
               key=lambda k: not k.startswith("loss/"))
  if bad:
    raise errors.NonFiniteLossError(
        f"non-finite loss at step {step}: " + ", ".join(f"{k}={metrics[k]}" for k in bad)
        + "; the last good checkpoint is left intact"
    )


class _PendingMetrics:
  """Step metrics left on the device until the host needs them, so that the host does not wait
  for the device after every step (big_vision fetches at log steps too). `fetch()` brings all of
  them over in one transfer, stops at the first step whose loss was not finite, and returns the
  last step's values (what is logged: the value at the log step, not an average)."""

  def __init__(self):
    self._steps: list[tuple[int, dict]] = []

  def add(self, step: int, metrics: dict) -> None:
    self._steps.append((step, metrics))

  def fetch(self) -> dict:
    steps, self._steps = self._steps, []
    fetched = jax.device_get([m for _, m in steps])
    for (step, _), metrics in zip(steps, fetched, strict=True):
      _check_finite(step, metrics)
    return fetched[-1] if fetched else {}


def _on_device(batches: Iterator[dict], mesh, ahead: int = 2) -> Iterator[dict]:
  """Places batches on the mesh `ahead` steps early (device_put is asynchronous, so the copy
  of the next batch overlaps the current step)."""
  placed = collections.deque(sharding.global_batch(next(batches), mesh) for _ in range(ahead))
  while True:
    placed.append(sharding.global_batch(next(batches), mesh))
    yield placed.popleft()


class _Profile:
  """A `jax.profiler` trace of `num_steps` steps, a few steps after the start (compilation
  excluded), written to the workdir for TensorBoard's profile tab (config.profile_steps)."""

  def __init__(self, workdir: str, first_step: int, num_steps: int):
    self.workdir, self.start, self.stop = workdir, first_step + 3, first_step + 3 + num_steps
    self.active = False

  def before(self, step: int) -> None:
    if step == self.start and self.stop > self.start:
      jax.profiler.start_trace(self.workdir)
      self.active = True

  def after(self, step: int, state) -> None:
    if self.active and step + 1 >= self.stop:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active = False
      logging.info("profiled steps %d-%d into %s (TensorBoard: Profile)", self.start + 1,
                   self.stop, self.workdir)


def _flatten(results: dict) -> dict[str, float]:
  return {f"{e}/{t}/{k}": v for e, r in results.items() for t, m in r.items()
          for k, v in m.items()}


def _headline(results: dict, best_metric: str) -> float:
  """`best_metric` = "<evaluator>/<metric>": the average over its targets, or its only one."""
  name, key = best_metric.split("/")
  r = results[name]
  return r["average" if "average" in r else next(iter(r))][key]


def _check_best_metric(config, evals: dict) -> None:
  name, _, key = config.best_metric.partition("/")
  if config.best_metric and (name not in evals or key not in SCALARS):
    raise errors.ConfigError(
        f"config.best_metric={config.best_metric!r}: expected '<evaluator>/<metric>' with an "
        f"evaluator of config.evals ({', '.join(evals)}) and a metric in {SCALARS}, or ''")


def _check_batch_sizes(config, streams: tuple[str, ...], mesh) -> None:
  """Global batches are split along `data`: each must divide by the device count."""
  n = mesh.shape[sharding.DATA]
  sizes = {"input.eval_batch": config.input.eval_batch}
  if MULTICAM in streams or MULTICAM_TEXT in streams:
    sizes["input.multicam_p * input.multicam_k"] = config.input.multicam_p * config.input.multicam_k
  if SINGLECAM in streams:
    sizes["input.singlecam_batch_size"] = config.input.singlecam_batch_size
  bad = [f"{k}={v}" for k, v in sizes.items() if v % n]
  if bad:
    raise errors.ConfigError(f"batch sizes must be multiples of the {n} devices: " + ", ".join(bad))


@dataclasses.dataclass
class _Run:
  """Everything training needs: built once from the config."""

  config: Any
  workdir: str
  mesh: Any
  sources: data.Sources
  method: Method
  tokenizer: Any
  tx: Any
  schedules: dict
  state: dict
  shardings: Any
  ckpt: checkpointing.Checkpointer
  evals: dict

  def saved(self, tree: dict) -> dict:
    """The checkpointed part of the state (or of its shardings): all but the frozen entries."""
    frozen = self.method.frozen_state()
    return {k: v for k, v in tree.items() if k not in frozen}

  def evaluate(self, state, step: int) -> dict:
    """`config.evals` on the live state; batches are placed on the mesh like training ones."""
    trained = inference.TrainedModel(
        self.method, self.method.eval_variables(state, self.config.eval.features), self.config,
        step, self.workdir, self.tokenizer,
        place=lambda x: sharding.global_batch({"x": x}, self.mesh)["x"])
    return evaluators.evaluate(self.evals, trained)


def fit_to_data(config, sources: data.Sources):
  """The config with the method's changes for what the data lack (`Method.fit_to_data`),
  announced in one line; the same config when nothing is missing."""
  changes, why = methods.get(config.method).fit_to_data(config, sources.info)
  if not changes:
    return config
  config = config.copy_and_resolve_references()
  for dotted, value in changes.items():
    *parents, leaf = dotted.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  logging.warning("%s; set %s", why, ", ".join(f"{k}={v}" for k, v in changes.items()))
  return config


def _setup(config, workdir: str) -> _Run:
  mesh = sharding.make_mesh(config.mesh.num_devices or None)
  sources = data.load_sources(config)
  config = fit_to_data(config, sources)
  init = methods.get(config.method).create(config, sources.info)
  method = init.method
  sources.check_streams(config.method, method.streams)
  _check_batch_sizes(config, method.streams, mesh)
  evals = evaluators.from_config(config, sources.targets, list(method.offered))
  _check_best_metric(config, evals)
  tx, schedules = optim.make_optimizer(config.optim, config.total_steps, method.backbone_keys)
  state, shardings = init_state(config, method, tx, init.pretrained, mesh)
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints, config.best_metric or None)
  return _Run(config, workdir, mesh, sources, method, init.tokenizer, tx, schedules, state,
              shardings, ckpt, evals)


def train_and_evaluate(config, workdir: str, allow_config_change: bool = False) -> dict:
  """Trains every stage of the method (most have one), evaluates on the targets, writes
  results.json; returns the last stage's final metrics ({} when stopped by a signal).

  A workdir holding checkpoints resumes; when they were trained with another configuration
  (beyond `RESUMABLE`), that is an error naming the keys, unless `allow_config_change`."""
  stages = methods.get(config.method).stages(config, workdir)
  for stage_workdir, stage_config in stages[:-1]:
    if _finished(stage_config, stage_workdir):
      logging.info("stage %s is finished (%s/results.json)", stage_config.name, stage_workdir)
    elif not _train_stage(stage_config, stage_workdir, allow_config_change):
      return {}
  last_workdir, last_config = stages[-1]
  return _train_stage(last_config, last_workdir, allow_config_change)


# Config entries that may change when a run resumes: how it is watched and where it runs, not
# what it trains (a checkpoint restores on any mesh; evaluation options are the user's).
RESUMABLE = ("eval", "evals", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
             "profile_steps", "best_metric", "mesh", "data.root", "data.cache_dir",
             "input.eval_batch", "input.prefetch", "input.image_check", "input.on_bad_image")


def _flat_json(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    return {k: v for key, sub in tree.items() for k, v in _flat_json(sub, f"{prefix}{key}.")
            .items()} or {prefix[:-1]: {}}
  return {prefix[:-1]: tree}


def config_changes(saved: dict, config) -> list[str]:
  """"key: old -> new" for every entry outside `RESUMABLE` that differs between a checkpoint's
  config and `config`."""
  old, new = _flat_json(saved), _flat_json(json.loads(config.to_json_best_effort()))
  absent = "(absent)"
  return [f"{k}: {old.get(k, absent)!r} -> {new.get(k, absent)!r}"
          for k in sorted(old.keys() | new.keys())
          if old.get(k, absent) != new.get(k, absent)
          and not any(k == r or k.startswith(r + ".") for r in RESUMABLE)]


def _check_resume_config(config, workdir: str, ckpt: checkpointing.Checkpointer,
                         allow: bool) -> None:
  """Refuses to continue a run with another configuration (unless `allow`); keeps the original
  config.json beside the new one when a change is allowed."""
  found = ckpt.newest_config()
  if found is None:
    return
  step, saved = found
  changes = config_changes(saved, config)
  if not changes:
    return
  shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
  if not allow:
    raise errors.ConfigError(
        f"{workdir} holds a checkpoint (step {step}) trained with another configuration: "
        f"{shown}. Use another --workdir, or pass --allow_config_change to continue it with the "
        "new values (e.g. a longer schedule)")
  logging.warning("continuing %s from step %d with a changed configuration (allowed): %s",
                  workdir, step, shown)
  previous = os.path.join(workdir, "config.json")
  if jax.process_index() == 0 and os.path.exists(previous):
    os.replace(previous, os.path.join(workdir, f"config_until_step{step}.json"))


def _finished(config, workdir: str) -> bool:
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    return False
  with open(path) as f:
    done = json.load(f)
  return done.get("config_name") == config.name and done.get("step") == config.total_steps


def _train_stage(config, workdir: str, allow_config_change: bool = False) -> dict:
  """One stage: trains (resuming from the workdir's checkpoints), evaluates, writes
  results.json; returns the final metrics ({} when stopped by a signal)."""
  os.makedirs(workdir, exist_ok=True)
  run = _setup(config, workdir)
  config = run.config  # as fitted to the data
  mesh, method, state, shardings, ckpt = run.mesh, run.method, run.state, run.shardings, run.ckpt
  _check_resume_config(config, workdir, ckpt, allow_config_change)
  start, initial, history = 0, None, []
  resumed = ckpt.restore_newest_readable(
      checkpointing.abstract_with_shardings(run.saved(state), run.saved(shardings)))
  if resumed is not None:
    start, restored, meta = resumed
    state = {**state, **restored}
    initial, history = meta.get("initial"), meta.get("history", [])
    logging.info("resumed from %s at step %d", workdir, start)
  config_file = os.path.join(workdir, "config.json")
  if jax.process_index() == 0:
    if resumed is None or not os.path.exists(config_file):  # a resumed run keeps its own
      with open(config_file, "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    if run.tokenizer is not None:  # tools that embed text read it from here
      tokenizers.copy_tokenizer_files(run.tokenizer.source,
                                      os.path.join(workdir, inference.TOKENIZER_DIR))

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  if start == 0:
    # Value statistics need every parameter on this host: not with FSDP over several hosts.
    parameter_overview.log_parameter_overview(
        state["params"], include_stats=jax.process_count() == 1, jax_logging_process=0)
    writer.write_hparams(_flat_config(config))
  step_fn = jax.jit(
      make_train_step(method, run.tx, run.schedules),
      in_shardings=(shardings, sharding.batch_sharding(mesh)),
      out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0,
  )
  train_iter = _on_device(
      data.train_iterator(config, run.sources, method.streams, run.tokenizer, start,
                          undecodable_file=os.path.join(workdir, "undecodable_images.json")),
      mesh)
  report = periodic_actions.ReportProgress(num_train_steps=config.total_steps, writer=writer,
                                           every_steps=config.log_every)
  if start == 0 and config.eval_every:
    initial = run.evaluate(state, 0)  # the untrained model: the baseline training must beat
    eval_images.write(writer, 0, run, state)  # ranked lists and reconstructions
    history.append({"step": 0, "evals": initial})
    writer.write_scalars(0, {f"eval/{k}": v for k, v in _flatten(initial).items()})
    logging.info("step 0 (untrained) %s", _summary(initial))
  results, step = {}, start
  pending, profile = _PendingMetrics(), _Profile(workdir, start, config.profile_steps)
  with checkpointing.StopSignal() as stop, metric_writers.ensure_flushes(writer):
    while step < config.total_steps:
      profile.before(step)
      with jax.set_mesh(mesh):
        state, metrics = step_fn(state, next(train_iter))
      profile.after(step, state)
      step += 1
      pending.add(step, metrics)
      report(step)
      final_step = step == config.total_steps
      evaluate = config.eval_every and (step % config.eval_every == 0 or final_step)
      save = step % config.checkpoint_every == 0 or final_step or stop
      if step % config.log_every == 0 or evaluate or save:
        metrics = pending.fetch()  # waits for the device; raises on a non-finite step
        if step % config.log_every == 0 or final_step:
          writer.write_scalars(step, {k: float(v) for k, v in metrics.items()})
      if evaluate:
        with report.timed("eval"):
          results = run.evaluate(state, step)
          eval_images.write(writer, step, run, state)
        history.append({"step": step, "evals": results})
        writer.write_scalars(step, {f"eval/{k}": v for k, v in _flatten(results).items()})
        logging.info("step %d %s", step, _summary(results))
        if config.best_metric:
          ckpt.save_best(step, run.saved(state), _meta(run, step, results, initial, history),
                         {config.best_metric: _headline(results, config.best_metric)})
      if save:
        ckpt.save(step, run.saved(state), _meta(run, step, results, initial, history))
      if stop:
        logging.warning("signal %d received: saved step %d and stopping", stop.received, step)
        break
  ckpt.close()
  if step < config.total_steps:  # stopped by a signal
    return {}
  if not results:  # resumed at the final step, or evaluation switched off during training
    results = run.evaluate(state, step)
    if not history or history[-1]["step"] != step:
      history.append({"step": step, "evals": results})
  final = {"config_name": config.name, "method": config.method, "step": step, "evals": results,
           "initial": initial, "history": history}
  if config.eval.pixel_baseline:
    final["baselines"] = {"raw_pixels": evaluators.pixel_baseline(run.evals)}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(final, f, indent=2)
    print(f"[{config.name}] step {step}: {_summary(results, SCALARS)}")
    for line in _versus_baselines(final):
      print(f"[{config.name}] {line}")
  return final


def _versus_baselines(final: dict, key: str = "mAP") -> list[str]:
  """One line per image Re-ID target: the untrained model, the raw-pixel baseline and the
  trained model, so that a run shows at a glance whether training worked."""
  pixels = final.get("baselines", {}).get("raw_pixels", {})
  lines = []
  for e, targets in pixels.items():
    for t, base in targets.items():
      trained = final["evals"][e][t][key]
      untrained = (final.get("initial") or {}).get(e, {}).get(t, {}).get(key)
      start = f"untrained {untrained:.1%} | " if untrained is not None else ""
      lines.append(f"{e}/{t} {key}: {start}raw pixels {base[key]:.1%} | trained {trained:.1%} "
                   f"({trained / max(base[key], 1e-12):.2f}x the raw-pixel baseline)")
  return lines


def evaluate(config, workdir: str, which: str = "latest", step: int | None = None) -> dict:
  """Rebuilds the checkpoint's model from its metadata (written on any device count, any
  method) and runs `config.evals` on `config.data.targets` with `config.eval`'s options. Reads
  no training source, no pretrained init file and builds no optimizer. `step` picks a regular
  checkpoint by its step (results_eval_step<N>.json)."""
  trained = inference.load(workdir, which, step, eval_options=config.eval)
  evals = evaluators.from_config(config, data.load_targets(config),
                                 list(trained.method.offered))
  results = evaluators.evaluate(evals, trained)
  final = {"config_name": config.name, "method": trained.config.get("method", "retext"),
           "step": trained.step,
           "evals": results, "checkpoint": which if step is None else step}
  name = which if step is None else f"step{step}"
  if jax.process_index() == 0:
    with open(os.path.join(workdir, f"results_eval_{name}.json"), "w") as f:
      json.dump(final, f, indent=2)
    print(f"[{config.name}] checkpoint step {trained.step}: {_summary(results, SCALARS)}")
  return final


def _summary(results: dict, keys: tuple[str, ...] = ("R1", "mAP", "mINP")) -> str:
  """One line of metrics per evaluator and target; the final lines print all of SCALARS."""
  return "; ".join(
      f"{e}/{t}: " + " ".join(f"{k} {r[k]:.1%}" for k in keys)
      for e, targets in results.items() for t, r in targets.items()
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

