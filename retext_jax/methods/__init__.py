"""Methods as plug-ins, chosen by `config.method`.

`get("retext")` imports `retext_jax.methods.retext` and returns its `METHOD` class; a dotted name
(`"my_project.my_method"`) imports that module instead, so a method can live outside this
package. Each method folder holds its modules, its loss and a `METHOD` subclass of
`base.Method`.
"""

from __future__ import annotations

import importlib

from retext_jax import errors
from retext_jax.methods.base import DataInfo, Init, Method

__all__ = ["DataInfo", "Init", "Method", "get"]

BUILT_IN = ("retext", "bot", "clip_scgi", "irra", "lcr2s")


def get(name: str) -> type[Method]:
  module_name = name if "." in name else f"retext_jax.methods.{name}"
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name is not None and module_name.startswith(e.name):
      raise errors.UnknownKeyError(
          f"config.method={name!r}: no module {module_name}; built-in methods: "
          f"{', '.join(BUILT_IN)}") from None
    raise
  method = getattr(module, "METHOD", None)
  if not (isinstance(method, type) and issubclass(method, Method)):
    raise errors.ConfigError(f"config.method={name!r}: {module_name} defines no METHOD "
                             "(a subclass of retext_jax.methods.Method)")
  return method
