"""Orbax checkpoints: the latest N, the best by target mAP, resume, and preemption-safe saving.

Layout under the workdir:
  checkpoints/<step>/{state,meta}   the latest `keep` checkpoints (state + config/metrics as JSON)
  best/<step>/{state,meta}          the single best checkpoint by the tracked metric: only what
                                    evaluation reads (`EVAL_KEYS`), no optimizer state
Orbax writes to a temporary folder and renames on commit, so a killed run never leaves a
half-written checkpoint that a resume would pick up. A checkpoint damaged afterwards (a
truncated or corrupted file, garbage metadata) is reported in one line naming the step and what
failed; resuming then falls back to the newest earlier checkpoint that reads (the damaged one is
renamed `<step>.unreadable` so it is neither retried nor in the way of the re-trained step), and
only when none reads is it an error.
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
import shutil
import signal
import sys
import traceback
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from retext_jax import errors

STATE, META = "state", "meta"
EVAL_KEYS = ("params", "batch_stats", "ema")  # what inference restores (and best/ keeps)


def _manager(path: str, keep: int, best_metric: str | None = None) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      best_fn=(lambda m: m[best_metric]) if best_metric else None,
      best_mode="max",
      create=True,
      enable_async_checkpointing=False,
  )
  return ocp.CheckpointManager(os.path.abspath(path), options=options, item_names=(STATE, META))


class UnreadableCheckpoint(Exception):
  """One checkpoint failed to read; the message names its folder, the step and the cause."""


def _silence_abandoned_reads() -> None:
  """When one array of a checkpoint fails to read, orbax stops waiting for the others; their
  reads fail later on a closed event loop and Python prints each as an ignored exception
  (thousands of traceback lines for one damaged file, some before the restore even returns).
  Installed before every restore: drops those (orbax's read coroutines, asyncio's "Event loop
  is closed", orbax tasks never retrieved), so a damaged checkpoint shows as the one line
  naming it; any other ignored exception still prints."""
  if getattr(sys.unraisablehook, "_retext_quiet", False):
    return
  previous = sys.unraisablehook

  def hook(unraisable) -> None:
    code = getattr(unraisable.object, "cr_code", None)
    from_orbax = code is not None and "/orbax/" in code.co_filename
    closed_loop = isinstance(unraisable.exc_value, RuntimeError) and \
        str(unraisable.exc_value) == "Event loop is closed"
    if not (from_orbax or closed_loop):
      previous(unraisable)

  hook._retext_quiet = True
  sys.unraisablehook = hook
  asyncio_logger = std_logging.getLogger("asyncio")
  if _not_orbax_leftover not in asyncio_logger.filters:
    asyncio_logger.addFilter(_not_orbax_leftover)


def _not_orbax_leftover(record: std_logging.LogRecord) -> bool:
  return not _orbax_leftover(record)


def _orbax_leftover(record: std_logging.LogRecord) -> bool:
  """asyncio's "... exception was never retrieved" for one of orbax's reads: a task or gathering
  of its coroutines, or a TensorStore future of a checkpoint's (OCDBT) files."""
  message = record.getMessage()
  if "exception was never retrieved" not in message:
    return False
  exc = record.exc_info[1] if record.exc_info else None
  frames = traceback.extract_tb(exc.__traceback__) if exc is not None else []
  return any(mark in message for mark in ("/orbax/", "OCDBT database")) or \
      any("/orbax/" in f.filename for f in frames)


def _root_cause(e: BaseException) -> str:
  """The first line of the innermost exception of the chain (TensorStore and JSON errors name
  the array and the file there), shortened."""
  while (e.__cause__ or e.__context__) is not None:
    e = e.__cause__ or e.__context__
  text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
  return text if len(text) <= 300 else text[:297] + "..."


def _dotted(path) -> str:
  """A tree path as orbax names the array ("opt_state.1.mu.image_encoder.kernel")."""
  return ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                  for k in path)


def _array_metadata(step_dir: str) -> dict:
  """The saved state's tree of array metadata (shapes, dtypes, names), read without the data."""
  with _absl_level(logging.ERROR):  # "metadata file does not exist" for items of a composite
    return ocp.PyTreeCheckpointer().metadata(os.path.join(step_dir, STATE)).item_metadata.tree


def _check_fits(folder: str, abstract_state: Any) -> None:
  """Raises UnreadableCheckpoint when the checkpoint's array metadata cannot be read, and
  ConfigError when it is readable but holds other arrays or shapes than this config builds."""
  try:
    tree = _array_metadata(folder)
    saved = {m.name: tuple(m.shape) for m in jax.tree_util.tree_leaves(tree)}
  except Exception as e:  # noqa: BLE001 - any failure to read is a damaged checkpoint
    raise UnreadableCheckpoint(f"{folder}: metadata unreadable: {_root_cause(e)}") from e
  wanted = {_dotted(path): (None if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                            else tuple(x.shape))
            for path, x in jax.tree_util.tree_leaves_with_path(abstract_state)}
  differ = sorted(n for n in wanted.keys() | saved.keys()
                  if n not in saved or n not in wanted
                  or (wanted[n] is not None and wanted[n] != saved[n]))
  if differ:
    shown = ", ".join(f"{n} (saved {saved.get(n, 'absent')}, built {wanted.get(n, 'absent')})"
                      for n in differ[:3])
    raise errors.ConfigError(
        f"checkpoint {folder} does not fit the state this config builds (were config.model, "
        f"config.loss or config.optim changed?): {len(differ)} array(s) differ: {shown}")


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
    """Keeps the model variables only (`EVAL_KEYS`): a best checkpoint is evaluated and
    exported, never resumed from."""
    if self.best is not None and step not in self.best.all_steps():
      kept = {k: v for k, v in state.items() if k in EVAL_KEYS}
      self.best.save(step, args=_save_args(kept, meta), metrics=dict(metrics), force=True)
      self.best.wait_until_finished()

  def restore(self, abstract_state: Any, step: int | None = None):
    """Restores (state, meta) of a regular checkpoint (the latest by default) to resume from.
    `abstract_state` holds ShapeDtypeStructs with target shardings. Raises UnreadableCheckpoint
    for a damaged checkpoint, ConfigError for one that does not fit the config."""
    mgr = self.latest
    step = mgr.latest_step() if step is None else step
    if step is None:
      raise errors.MissingFileError(f"no checkpoint under {mgr.directory}")
    folder = os.path.join(str(mgr.directory), str(step))
    _check_fits(folder, abstract_state)
    _silence_abandoned_reads()
    try:
      with _absl_level(logging.ERROR):
        out = mgr.restore(step, args=ocp.args.Composite(
            **{STATE: ocp.args.StandardRestore(abstract_state), META: ocp.args.JsonRestore()}))
    except Exception as e:  # noqa: BLE001 - the metadata fits: a failure here is damage
      raise UnreadableCheckpoint(f"{folder}: {_root_cause(e)}") from e
    return out[STATE], out[META]

  def newest_config(self) -> tuple[int, dict] | None:
    """(step, config) saved with the newest regular checkpoint whose metadata reads (a damaged
    one is skipped here and reported by `restore_newest_readable`); None without any."""
    for step in sorted(self.latest.all_steps(), reverse=True):
      try:
        with _absl_level(logging.ERROR):
          meta = self.latest.restore(step, args=ocp.args.Composite(
              **{META: ocp.args.JsonRestore()}))[META]
        return step, dict(meta["config"])
      except Exception:  # noqa: BLE001
        continue
    return None

  def restore_newest_readable(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
    """(step, state, meta) of the newest checkpoint that reads, None when there is none at all.
    Each damaged one is reported in one warning and renamed aside; a `best/` newer than the
    step resumed from is removed (that step will be trained again)."""
    steps = sorted(self.latest.all_steps(), reverse=True)
    for i, step in enumerate(steps):
      try:
        state, meta = self.restore(abstract_state, step)
      except UnreadableCheckpoint as e:
        then = f"falling back to step {steps[i + 1]}" if i + 1 < len(steps) else "none older"
        logging.warning("checkpoint unreadable: %s; %s", e, then)
        self._set_aside(step)
        continue
      self._drop_best_after(step)
      return step, state, meta
    if steps:
      raise errors.CheckpointError(
          f"no checkpoint under {self.latest.directory} can be read (tried steps "
          f"{', '.join(map(str, steps))}; they were renamed *.unreadable); remove the folder to "
          "start over")
    return None

  def _set_aside(self, step: int) -> None:
    if jax.process_index() == 0:
      folder = os.path.join(str(self.latest.directory), str(step))
      target, n = folder + ".unreadable", 1
      while os.path.exists(target):  # the same step went bad before
        target, n = f"{folder}.unreadable-{n}", n + 1
      os.replace(folder, target)
    self.latest.reload()

  def _drop_best_after(self, step: int) -> None:
    if self.best is None:
      return
    newer = [s for s in self.best.all_steps() if s > step]
    for s in newer:
      logging.warning("best checkpoint of step %d is newer than the resumed step %d: removed "
                      "(the best is tracked again from here)", s, step)
      if jax.process_index() == 0:
        shutil.rmtree(os.path.join(str(self.best.directory), str(s)))
    if newer:
      self.best.reload()

  def close(self) -> None:
    self.latest.close()
    if self.best is not None:
      self.best.close()


def restore_variables(workdir: str, which: str = "latest", step: int | None = None,
                      keys: tuple[str, ...] = EVAL_KEYS
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
    aside = sorted(d for d in os.listdir(folder) if ".unreadable" in d) \
        if os.path.isdir(folder) else []
    why = (f"(set aside as unreadable by an earlier run: {', '.join(aside)})" if aside
           else "(is --workdir a training workdir?)")
    raise errors.MissingFileError(f"no {which} checkpoint under {folder} {why}")
  if step is not None and step not in steps:
    raise errors.MissingFileError(f"no checkpoint for step {step} under {folder}; have {steps}")
  candidates = [step] if step is not None else steps[::-1]
  for i, s in enumerate(candidates):
    try:
      return _read_variables(folder, s, keys)
    except UnreadableCheckpoint as e:
      if i + 1 < len(candidates):
        logging.warning("checkpoint unreadable: %s; falling back to step %d", e,
                        candidates[i + 1])
        continue
      tried = "" if len(candidates) == 1 else f" (none of steps {candidates} reads)"
      raise errors.CheckpointError(f"checkpoint unreadable{tried}: {e}") from e


def _read_variables(folder: str, step: int, keys: tuple[str, ...]) -> tuple[dict, dict]:
  path = os.path.join(folder, str(step))
  try:
    with _absl_level(logging.ERROR):  # "metadata file does not exist" for items of a composite
      meta = ocp.CheckpointManager(folder, item_names=(STATE, META)).restore(
          step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]
    tree = _array_metadata(path)
  except Exception as e:  # noqa: BLE001 - any failure to read is a damaged checkpoint
    raise UnreadableCheckpoint(f"{path}: metadata unreadable: {_root_cause(e)}") from e
  if "params" not in tree:
    raise errors.ConfigError(f"checkpoint {path} has no params in its state (keys: "
                             f"{sorted(tree)})")
  present = [k for k in keys if tree.get(k)]
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree_util.tree_map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      {k: tree[k] for k in present})
  _silence_abandoned_reads()
  try:
    with _absl_level(logging.ERROR):
      variables = ocp.PyTreeCheckpointer().restore(
          os.path.join(path, STATE), args=ocp.args.PyTreeRestore(
              item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
              partial_restore=True))
  except Exception as e:  # noqa: BLE001
    raise UnreadableCheckpoint(f"{path}: {_root_cause(e)}") from e
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
