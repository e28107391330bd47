r"""Entry point: `python -m retext_jax.main --config=configs/retext.py:demo --workdir=DIR`.

`--mode=train` (default) trains and evaluates, resuming from the workdir if it holds a
checkpoint; `--mode=eval` rebuilds the model of the latest (or `--checkpoint=best`) checkpoint
from its metadata, whatever the method, and runs `config.evals`. Errors in what the user controls
(`retext_jax.errors.UserError`: flags, config keys, dataset folders, pretrained files) are printed
as one line with exit code 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from retext_jax import errors, tf_setup

tf_setup.quiet()

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:args]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results go.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (and evaluate) or evaluate.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "latest", "Which checkpoint --mode=eval restores: latest, best or a step number "
    "(latest falls back to the newest readable one).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first: one process per host (TPU "
    "pod slices, several GPU hosts). TPU, SLURM and Open MPI are detected; elsewhere give the "
    "three flags below.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "With --distributed: host:port of process 0, the same on "
    "every process (default: detected, or $JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "With --distributed: how many processes (default: detected).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "With --distributed: this process, 0..num_processes-1.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Continue a workdir's run although its checkpoint was trained "
    "with another configuration (e.g. a longer schedule); without it that is an error naming "
    "the keys. The original config.json is kept as config_until_step<N>.json.")
flags.mark_flags_as_required(["config", "workdir"])

def _quiet_libraries(record: std_logging.LogRecord) -> bool:
  """Drops INFO chatter of orbax (dozens of lines per checkpoint); its warnings still show.

  `record.levelno` is a standard-library level (absl's WARNING constant is -1, not 30).
  """
  return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.get_absl_logger().addFilter(_quiet_libraries)
  tf_setup.data_only()
  import jax

  if _DISTRIBUTED.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from retext_jax import train

  logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
               jax.process_count())
  try:
    which, step = _checkpoint_choice(_CHECKPOINT.value)
    workdir = _checked_workdir(_WORKDIR.value, _MODE.value)
    config = _config()
    if _MODE.value == "train":
      train.train_and_evaluate(config, workdir, _ALLOW_CONFIG_CHANGE.value)
    else:
      train.evaluate(config, workdir, which=which, step=step)
  except errors.UserError as e:
    sys.exit(errors.report(e))


def _config():
  """The --config ConfigDict (ml_collections hands back a stand-in that raises the load error
  on first use when the file did not load)."""
  config = _CONFIG.value
  try:
    config.keys()
  except OSError as e:
    user = _unloadable_config(e)
    if user is None:
      raise
    raise user from None
  return config


def _unloadable_config(e: BaseException) -> errors.ConfigError | None:
  """ml_collections' OSError for a --config file that does not load (missing, unreadable)."""
  if not isinstance(e, OSError) or "Failed loading config file" not in str(e):
    return None
  reason = str(e).strip().splitlines()[-1].strip()
  return errors.ConfigError(f"--config: cannot load the config file ({reason})")


def _checked_workdir(workdir: str, mode: str) -> str:
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise errors.ConfigError(f"--workdir={workdir} is a file; give a folder (it is created "
                             "when training starts)")
  if mode == "eval" and not os.path.isdir(workdir):
    raise errors.MissingFileError(f"--workdir={workdir} does not exist (--mode=eval reads the "
                                  "checkpoints of a training workdir)")
  return workdir


def _checkpoint_choice(value: str) -> tuple[str, int | None]:
  """--checkpoint: ("latest" | "best", None) or ("latest", step)."""
  if value in ("latest", "best"):
    return value, None
  if value.isdigit():
    return "latest", int(value)
  raise errors.ConfigError(f"--checkpoint={value!r}: expected latest, best or a step number")


def _user_error(e: BaseException | None) -> errors.UserError | None:
  """The UserError behind `e`, the first one raised: ml_collections re-raises what a config
  file's get_config raises as a copy of it with the traceback in its message."""
  found = None
  while e is not None:
    if isinstance(e, errors.UserError):
      found = e
    e = e.__cause__ or e.__context__
  return found


def _unknown_override(e: BaseException) -> errors.UnknownKeyError | None:
  """An unknown `--config.<key>`: ml_collections raises AttributeError (or KeyError) from the
  ConfigDict while applying the overrides, before main() runs."""
  if not isinstance(e, (AttributeError, KeyError)) or not e.args:
    return None
  if not any("ml_collections" in f.filename for f in traceback.extract_tb(e.__traceback__)):
    return None
  inner = e.args[0]
  while isinstance(inner, BaseException) and inner.args:  # AttributeError(KeyError(message))
    inner = inner.args[0]
  key, _, hint = str(inner).partition("\n")
  return errors.UnknownKeyError(
      f"unknown config key {key.strip(chr(39) + chr(34))!r} in a --config override"
      + (f" ({hint.strip()})" if hint else "")
      + "; the keys are the fields of the config file (e.g. --config.total_steps=100)")


def _parse_flags(argv: list[str]) -> list[str]:
  """Flag parsing with every command-line mistake as one line and exit code 2: a get_config
  error (unknown preset, bad override value) arrives wrapped by the flags library, an unknown
  `--config.<key>` as an AttributeError, a bad flag value as a flags.Error."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001  (re-raised unless it is a user error)
    user = _user_error(e) or _unknown_override(e) or _unloadable_config(e)
    if user is None and isinstance(e, flags.Error):
      user = errors.ConfigError(f"{e} (see --helpshort)")
    if user is None:
      raise
    sys.exit(errors.report(user))


def run() -> None:
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
