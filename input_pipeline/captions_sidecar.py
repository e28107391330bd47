"""Captions sidecars: captions for a dataset that ships none, attached to any reader's records.

Format (JSON, UTF-8): an object mapping an image path relative to the dataset folder (the
`ReIDDataset.root` the reader resolved, `/`-separated) to a list of captions:

    {"bounding_box_train/0002_c1s1_000451_03.jpg": ["a man in a red jacket ..."], ...}

`python -m retext_jax.tools.caption` writes it; `registry.get_dataset(name, root,
captions="captions.json")` attaches it (a relative sidecar path is relative to the dataset
folder). Images without an entry keep their captions (none for Re-ID datasets); entries naming no
image of the dataset are counted and logged, never silently dropped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence

from input_pipeline.records import ReIDDataset
from retext_jax import errors

_log = logging.getLogger(__name__)
SPLITS = ("train", "query", "gallery", "test")


def relative_path(path: str, root: str) -> str:
  return os.path.relpath(path, root).replace(os.sep, "/")


def load(path: str) -> dict[str, tuple[str, ...]]:
  if not os.path.isfile(path):
    raise errors.MissingFileError(f"captions sidecar {path} does not exist (write it with "
                                  "python -m retext_jax.tools.caption)")
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.DataError(f"captions sidecar {path}: not valid JSON ({e})") from None
  if not isinstance(data, dict):
    raise errors.DataError(f"captions sidecar {path}: expected an object path -> [captions]")
  out = {}
  for rel, caps in data.items():
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
      raise errors.DataError(f"captions sidecar {path}: entry {rel!r} must be a list of strings")
    out[rel] = tuple(c for c in caps if c.strip())
  return out


def write(path: str, captions: Mapping[str, Sequence[str]]) -> None:
  """Writes atomically (a temporary file renamed over `path`)."""
  tmp = f"{path}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump({k: list(v) for k, v in sorted(captions.items())}, f, indent=1, ensure_ascii=False)
  os.replace(tmp, path)


def attach(dataset: ReIDDataset, captions: Mapping[str, Sequence[str]],
           source: str = "sidecar") -> ReIDDataset:
  """`dataset` with each record's captions taken from `captions` (relative path -> list)."""
  used, attached = set(), 0
  for split in SPLITS:
    records = []
    for r in getattr(dataset, split):
      rel = relative_path(r.path, dataset.root)
      if rel in captions:
        used.add(rel)
        if captions[rel]:
          r = dataclasses.replace(r, captions=tuple(captions[rel]))
          attached += 1
      records.append(r)
    setattr(dataset, split, records)
  unmatched = len(set(captions) - used)
  _log.info("%s: captions attached to %d images from %s", dataset.name, attached, source)
  if unmatched:
    _log.warning("%s: %d entries of %s name no image of the dataset (first: %s)", dataset.name,
                 unmatched, source, sorted(set(captions) - used)[0])
  dataset.skipped = {**getattr(dataset, "skipped", {}), **(
      {"captions sidecar entries without an image": unmatched} if unmatched else {})}
  return dataset
