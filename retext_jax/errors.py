"""The project's user errors, and how the command-line entry points report them.

A `UserError` is a mistake the user can fix (a config key or value, a dataset folder or
annotation, a pretrained file, a missing optional package, a diverging run): the entry points
print it as one line and exit with code 2. Every other exception is a bug in this project or a
library and keeps its traceback. Each class also derives from the builtin exception it
refines, so `except ValueError` in user code keeps working. Imports nothing but the standard
library (input_pipeline uses it too).
"""

from __future__ import annotations

import os
import sys


class UserError(Exception):
  """Something the user controls is wrong; the message says what and where."""


class ConfigError(UserError, ValueError):
  """A config key, value or command-line argument is wrong or inconsistent."""


class UnknownKeyError(UserError, KeyError):
  """A name (config key, preset, reader, protocol, method) is not one of the known ones."""

  def __str__(self) -> str:  # KeyError would repr() the message: show it as written
    return str(self.args[0]) if self.args else ""


class DataError(UserError, ValueError):
  """A dataset file, annotation, image or split does not hold what it should."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or folder the config or a flag names does not exist."""


class CheckpointError(UserError, OSError):
  """No checkpoint of the workdir can be read (damaged files, an interrupted copy)."""


class DependencyError(UserError, ImportError):
  """An optional package needed by the chosen option is not installed."""


class NonFiniteLossError(UserError, FloatingPointError):
  """Training diverged (NaN/Inf loss); the last good checkpoint is kept."""


def report(e: BaseException) -> int:
  """Prints `error: <message>` on stderr and returns 2; re-raises when RETEXT_TRACEBACK is set
  (call inside the `except` block)."""
  if os.environ.get("RETEXT_TRACEBACK"):
    raise e
  sys.stderr.write(f"error: {e}\n")  # one write: a line of its own even if threads print too
  sys.stderr.flush()
  return 2
