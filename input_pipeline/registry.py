"""Datasets found by name, so configs can say `sources=("market1501", "synthpedes")`."""

from __future__ import annotations

import os
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


def get_dataset(name: str, root: str, captions: str = "", **kwargs) -> ReIDDataset:
  """Reads dataset `name` from `root` (the folder the user placed the data in).

  `captions` names a captions sidecar (`input_pipeline.captions_sidecar`; relative to the
  dataset folder the reader resolved) whose captions are attached to the records, whatever the
  reader. The other keyword arguments are the reader's options."""
  _import_readers()
  if name not in _READERS:
    raise errors.UnknownKeyError(
        f"unknown dataset {name!r}; registered: {', '.join(sorted(_READERS))}")
  dataset = _READERS[name](root, **kwargs)
  if captions:
    from input_pipeline import captions_sidecar

    path = captions if os.path.isabs(captions) else os.path.join(dataset.root, captions)
    dataset = captions_sidecar.attach(dataset, captions_sidecar.load(path), path)
  return dataset


def _import_readers() -> None:
  # Readers register themselves on import; importing here keeps `registry` free of cycles.
  import input_pipeline.readers  # noqa: F401
