"""Datasets found by name, so configs can say `sources=("market1501", "synthpedes")`."""

from __future__ import annotations

from collections.abc import Callable

from input_pipeline.records import ReIDDataset
from retext_jax import errors

Reader = Callable[..., ReIDDataset]
_READERS: dict[str, Reader] = {}


def register(name: str) -> Callable[[Reader], Reader]:
  """Decorator: `@register("market1501")` on a reader `f(root, **kw) -> ReIDDataset`."""

  def wrap(fn: Reader) -> Reader:
    if name in _READERS:
      raise ValueError(f"dataset {name!r} is registered twice")
    _READERS[name] = fn
    return fn

  return wrap


def names() -> list[str]:
  _import_readers()
  return sorted(_READERS)


def get_dataset(name: str, root: str, **kwargs) -> ReIDDataset:
  """Reads dataset `name` from `root` (the folder the user placed the data in)."""
  _import_readers()
  if name not in _READERS:
    raise errors.UnknownKeyError(
        f"unknown dataset {name!r}; registered: {', '.join(sorted(_READERS))}")
  return _READERS[name](root, **kwargs)


def _import_readers() -> None:
  # Readers register themselves on import; importing here keeps `registry` free of cycles.
  import input_pipeline.readers  # noqa: F401
