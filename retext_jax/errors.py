"""How the command-line entry points report mistakes a user can fix: one line, exit code 2."""

from __future__ import annotations

import os
import sys

# Config keys, dataset folders, pretrained files, non-finite losses: shown without a traceback.
USER_ERRORS = (FileNotFoundError, KeyError, ValueError, ImportError, FloatingPointError)


def report(e: BaseException) -> int:
  """Prints `error: <Type>: <message>` on stderr and returns 2; re-raises when
  RETEXT_TRACEBACK is set (call inside the `except` block)."""
  if os.environ.get("RETEXT_TRACEBACK"):
    raise e
  msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
  print(f"error: {type(e).__name__}: {msg}", file=sys.stderr)
  return 2
