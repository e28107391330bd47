"""Orbax checkpoints: the latest N, the best by target mAP, resume, and preemption-safe saving.

Layout under the workdir:
  checkpoints/<step>/{state,meta}   the latest `keep` checkpoints (state + config/metrics as JSON)
  best/<step>/{state,meta}          the single best checkpoint by the tracked metric
Orbax writes to a temporary folder and renames on commit, so a killed run never leaves a
half-written checkpoint that a resume would pick up.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from retext_jax import errors

STATE, META = "state", "meta"


def _manager(path: str, keep: int, best_metric: str | None = None) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      best_fn=(lambda m: m[best_metric]) if best_metric else None,
      best_mode="max",
      create=True,
      enable_async_checkpointing=False,
  )
  return ocp.CheckpointManager(os.path.abspath(path), options=options, item_names=(STATE, META))


def _save_args(state: Any, meta: Mapping[str, Any]) -> ocp.args.Composite:
  return ocp.args.Composite(
      **{STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(dict(meta))}
  )


class Checkpointer:
  """Saves the train state with its config; restores onto whatever mesh the caller has now."""

  def __init__(self, workdir: str, keep: int = 2, best_metric: str | None = None):
    self.latest = _manager(os.path.join(workdir, "checkpoints"), keep)
    self.best_metric = best_metric
    self.best = _manager(os.path.join(workdir, "best"), 1, best_metric) if best_metric else None

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state: Any, meta: Mapping[str, Any], force: bool = False) -> None:
    if step not in self.latest.all_steps():
      self.latest.save(step, args=_save_args(state, meta), force=force)
      self.latest.wait_until_finished()

  def save_best(self, step: int, state: Any, meta: Mapping[str, Any],
                metrics: Mapping[str, float]) -> None:
    if self.best is not None and step not in self.best.all_steps():
      self.best.save(step, args=_save_args(state, meta), metrics=dict(metrics), force=True)
      self.best.wait_until_finished()

  def restore(self, abstract_state: Any, step: int | None = None, which: str = "latest"):
    """Restores (state, meta). `abstract_state` holds ShapeDtypeStructs with target shardings."""
    mgr = self.latest if which == "latest" else self.best
    if mgr is None:
      raise errors.ConfigError("no best-checkpoint manager: config.best_metric is not set")
    if step is None:
      step = mgr.best_step() if which == "best" else mgr.latest_step()
    if step is None:
      raise errors.MissingFileError(f"no {which} checkpoint under {mgr.directory}")
    try:
      out = mgr.restore(step, args=ocp.args.Composite(
          **{STATE: ocp.args.StandardRestore(abstract_state), META: ocp.args.JsonRestore()}
      ))
    except ValueError as e:
      first = str(e).splitlines()[0] if str(e) else type(e).__name__
      raise errors.ConfigError(
          f"checkpoint {mgr.directory}/{step} does not fit the state this config builds "
          f"(were config.model, config.loss or config.optim changed?): {first}"
      ) from e
    return out[STATE], out[META]

  def close(self) -> None:
    self.latest.close()
    if self.best is not None:
      self.best.close()


def restore_variables(workdir: str, which: str = "latest", step: int | None = None,
                      keys: tuple[str, ...] = ("params", "batch_stats", "ema")
                      ) -> tuple[dict, dict]:
  """(state subtree `keys`, meta) of a checkpoint, on this host's first device, for inference.

  "params" must be there; the other keys are empty dicts when the state holds none (orbax
  stores nothing for an empty subtree, e.g. the EMA of a method without one).

  Reads only the model variables, not the optimizer state, and needs no abstract train state:
  shapes come from the checkpoint itself, so no config, data or device count must match.
  """
  if which not in ("latest", "best"):
    raise errors.ConfigError(f"checkpoint must be 'latest' or 'best', got {which!r}")
  folder = os.path.join(os.path.abspath(workdir), "checkpoints" if which == "latest" else which)
  steps = sorted(int(d) for d in os.listdir(folder) if d.isdigit()) if os.path.isdir(folder) \
      else []
  if step is None and not steps:
    raise errors.MissingFileError(f"no {which} checkpoint under {folder} (is --workdir a training "
                            "workdir?)")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise errors.MissingFileError(f"no checkpoint for step {step} under {folder}; have {steps}")
  path = os.path.join(folder, str(step))
  meta = ocp.CheckpointManager(folder, item_names=(STATE, META)).restore(
      step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]
  ckptr = ocp.PyTreeCheckpointer()
  with _absl_level(logging.ERROR):  # "metadata file does not exist" for items of a composite
    tree = ckptr.metadata(os.path.join(path, STATE)).item_metadata.tree
  if "params" not in tree:
    raise errors.ConfigError(f"checkpoint {path} has no params in its state (keys: "
                             f"{sorted(tree)})")
  present = [k for k in keys if tree.get(k)]
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree_util.tree_map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      {k: tree[k] for k in present})
  with _absl_level(logging.ERROR):
    variables = ckptr.restore(os.path.join(path, STATE), args=ocp.args.PyTreeRestore(
        item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True))
  return {k: variables.get(k, {}) for k in keys}, meta


@contextlib.contextmanager
def _absl_level(level: int):
  previous = logging.get_verbosity()
  logging.set_verbosity(level)
  try:
    yield
  finally:
    logging.set_verbosity(previous)


def abstract_with_shardings(state: Any, shardings: Any) -> Any:
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
  )


class StopSignal:
  """Turns SIGTERM / SIGINT into a flag the loop polls, so it can save and exit cleanly."""

  def __init__(self):
    self.received: int | None = None
    self._previous = {}

  def __enter__(self) -> StopSignal:
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame) -> None:
    del frame
    self.received = signum

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def __bool__(self) -> bool:
    return self.received is not None
