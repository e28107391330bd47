"""Runs `python -m retext_jax.main FLAGS...` in this process and lists the files it opened for
writing, so that a test can tell which process of a multi-process run wrote what.

Usage: python tests/multiprocess_worker.py WRITTEN.json FLAGS...
"""

import json
import os
import runpy
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def main(out: str, flags: list[str]) -> None:
  written: set[str] = set()

  def on_open(event: str, args: tuple) -> None:
    # "open" is raised by open(), io.open() and os.open(): (path, mode or None, os flags).
    if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
      return
    mode, flags_ = args[1], args[2]
    if (isinstance(mode, str) and set(mode) & set("wax+")) or (flags_ or 0) & _WRITE_FLAGS:
      written.add(os.path.abspath(os.fsdecode(args[0])))

  sys.addaudithook(on_open)
  sys.argv = ["retext_jax.main", *flags]
  try:
    runpy.run_module("retext_jax.main", run_name="__main__", alter_sys=True)
  finally:
    paths = sorted(written)
    with open(out, "w") as f:
      json.dump(paths, f)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2:])
