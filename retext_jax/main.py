r"""Entry point: `python -m retext_jax.main --config=configs/retext.py:demo --workdir=DIR`.

`--mode=train` (default) trains and evaluates, resuming from the workdir if it holds a
checkpoint; `--mode=eval` restores the latest (or `--checkpoint=best`) checkpoint and evaluates
it. Errors in what the user controls (config keys, dataset folders, pretrained files) are printed
as one line, not as a traceback from inside TensorFlow or JAX.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from retext_jax import errors  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:args]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results go.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (and evaluate) or evaluate.")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "latest", ["latest", "best"],
                                "Which checkpoint --mode=eval restores.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (multi-host runs, TPU pods).")
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
  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")  # TF only feeds data; JAX owns the accelerators
  import jax

  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  from retext_jax import train

  logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
               jax.process_count())
  try:
    if _MODE.value == "train":
      train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    else:
      train.evaluate(_CONFIG.value, _WORKDIR.value, which=_CHECKPOINT.value)
  except errors.USER_ERRORS as e:
    sys.exit(errors.report(e))


def run() -> None:
  try:
    app.run(main)
  except (KeyError, AttributeError, ValueError) as e:
    # Config-flag parsing (unknown or locked keys) fails before main() runs.
    if os.environ.get("RETEXT_TRACEBACK"):
      raise
    key = str(e).strip("\"'")
    print(f"error: unknown config key {key!r} in a --config override; the keys are the "
          "fields of the config file (e.g. --config.total_steps=100)", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  run()
