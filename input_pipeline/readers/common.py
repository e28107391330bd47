"""Helpers every reader shares: finding the dataset folder, parsing names, JSON, clear errors.

Readers accept either the dataset folder itself or one of its conventional parents (the layouts
torchreid, BAU and IRRA expect), so `find_root` tries a short list of relative candidates and, when
none fits, raises an error that shows the expected layout and every path it searched.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from input_pipeline import records as records_lib
from input_pipeline.records import Record, ReIDDataset
from retext_jax import errors

log = logging.getLogger("input_pipeline.readers")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

# Seed of the deterministic random train/test splits of the small Protocol-1 targets (GRID without
# its .mat file, PRID, VIPeR, iLIDS): split k draws from numpy.random.default_rng([SPLIT_SEED, k]).
SPLIT_SEED = 0
NUM_SPLITS = 10


class LayoutError(errors.MissingFileError):
  """A dataset folder, sub-folder or annotation file is missing."""


class AnnotationError(errors.DataError):
  """An annotation file, list file or image file name cannot be parsed."""


def find_root(
    root: str,
    candidates: Sequence[str],
    required: Sequence[str | tuple[str, ...]],
    *,
    dataset: str,
    layout: str,
) -> str:
  """Returns the first `root/<candidate>` that holds every `required` entry.

  Args:
    root: the folder the user passed (the dataset folder or a conventional parent).
    candidates: relative folders to try, "" meaning `root` itself.
    required: entries that must exist inside the dataset folder; a tuple lists alternatives
      (e.g. two spellings of an annotation file).
    dataset: registry name, for the error message.
    layout: a short text picture of the expected layout, shown when nothing fits.
  """
  root = os.path.abspath(os.path.expanduser(root))
  if not os.path.isdir(root):
    raise LayoutError(
        f"{dataset}: dataset root {root} does not exist or is not a folder.\n"
        f"Expected layout:\n{layout}"
    )
  searched = []
  for cand in candidates:
    base = os.path.normpath(os.path.join(root, cand))
    if not os.path.isdir(base):
      searched.append(f"  {base}: not a folder")
      continue
    missing = [_describe(r) for r in required if not _exists_any(base, r)]
    if not missing:
      return base
    searched.append(f"  {base}: missing {', '.join(missing)}")
  raise LayoutError(
      f"{dataset}: no dataset folder found under {root}.\nExpected layout:\n{layout}\n"
      "Searched:\n" + "\n".join(searched)
  )


def _exists_any(base: str, entry: str | tuple[str, ...]) -> bool:
  alternatives = (entry,) if isinstance(entry, str) else entry
  return any(os.path.exists(os.path.join(base, a)) for a in alternatives)


def _describe(entry: str | tuple[str, ...]) -> str:
  return entry if isinstance(entry, str) else " or ".join(entry)


def first_existing(base: str, names: Sequence[str]) -> str:
  """The first of `names` that exists in `base` (callers checked one does via `find_root`)."""
  for name in names:
    path = os.path.join(base, name)
    if os.path.exists(path):
      return path
  raise LayoutError(f"none of {', '.join(names)} found in {base}")


def require_dir(path: str, *, dataset: str, layout: str) -> str:
  if not os.path.isdir(path):
    raise LayoutError(f"{dataset}: missing folder {path}.\nExpected layout:\n{layout}")
  return path


def list_images(folder: str, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[str]:
  """Sorted absolute paths of the image files directly inside `folder` (extension ignores case).
  Symbolic links that point nowhere or loop are skipped, counted and named in a warning."""
  exts = tuple(e.lower() for e in extensions)
  names, dangling = [], []
  with os.scandir(folder) as it:
    for e in it:
      if not e.name.lower().endswith(exts):
        continue
      try:
        is_file = e.is_file()  # follows links: False for a link to nothing
      except OSError:  # a loop of links (ELOOP)
        is_file = False
      if is_file:
        names.append(e.name)
      elif e.is_symlink():
        dangling.append(e.name)
  if dangling:
    dangling.sort()
    logging.warning("%s: skipped %d image link(s) that point nowhere or loop: %s%s", folder,
                    len(dangling), ", ".join(dangling[:5]), ", ..." if len(dangling) > 5 else "")
  return [os.path.join(os.path.abspath(folder), n) for n in sorted(names)]


def parse_name(path: str, pattern: re.Pattern[str], *, dataset: str, expected: str) -> tuple:
  """Integer groups of `pattern` searched in the file name; a clear error naming the file if not."""
  name = os.path.basename(path)
  m = pattern.search(name)
  if m is None:
    raise AnnotationError(
        f"{dataset}: cannot parse image file name {path!r}: expected {expected} "
        f"(pattern {pattern.pattern!r})"
    )
  try:
    return tuple(int(g) for g in m.groups())
  except ValueError:
    raise AnnotationError(
        f"{dataset}: cannot parse image file name {path!r}: expected {expected}"
    ) from None


def load_json(path: str, *, dataset: str) -> Any:
  """json.load with an error that names the file, line and column of malformed content."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise AnnotationError(
        f"{dataset}: malformed JSON in {path} at line {e.lineno} column {e.colno}: {e.msg}"
    ) from e


def json_entries(path: str, *, dataset: str) -> list[dict]:
  """Loads a JSON file that must hold a list of objects."""
  data = load_json(path, dataset=dataset)
  if not isinstance(data, list):
    raise AnnotationError(
        f"{dataset}: {path} must hold a JSON list of objects, found {type(data).__name__}"
    )
  for i, entry in enumerate(data):
    if not isinstance(entry, dict):
      raise AnnotationError(
          f"{dataset}: {path} entry #{i} must be a JSON object, found {type(entry).__name__}"
      )
  return data


def field(entry: Mapping[str, Any], key: str, *, source: str, index: int, dataset: str) -> Any:
  """entry[key], or an error naming the file, the entry index and the missing field."""
  if key not in entry:
    raise AnnotationError(
        f"{dataset}: {source} entry #{index} has no field {key!r} (fields: {sorted(entry)})"
    )
  return entry[key]


def int_field(entry: Mapping[str, Any], key: str, *, source: str, index: int, dataset: str) -> int:
  value = field(entry, key, source=source, index=index, dataset=dataset)
  try:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
      raise ValueError
    return int(value)
  except (TypeError, ValueError):
    raise AnnotationError(
        f"{dataset}: {source} entry #{index} field {key!r} must be an integer, got {value!r}"
    ) from None


def str_list_field(
    entry: Mapping[str, Any], key: str, *, source: str, index: int, dataset: str
) -> list[str]:
  """A list of strings (a bare string is accepted as a one-element list)."""
  value = field(entry, key, source=source, index=index, dataset=dataset)
  if isinstance(value, str):
    return [value]
  if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
    raise AnnotationError(
        f"{dataset}: {source} entry #{index} field {key!r} must be a list of strings, "
        f"got {value!r}"
    )
  return value


def check_image(path: str, *, source: str, dataset: str) -> str:
  """Returns `path` if it is a file; otherwise an error naming the image and who referenced it."""
  if not os.path.isfile(path):
    raise LayoutError(f"{dataset}: image {path} listed in {source} does not exist")
  return path


class SkipCounter:
  """Counts records a reader drops by policy (e.g. empty captions) and logs one warning each kind.

  Readers never drop data silently: each count ends up in the log and on `dataset.skipped`.
  """

  def __init__(self, dataset: str):
    self.dataset = dataset
    self.counts: collections.Counter[str] = collections.Counter()
    self._examples: dict[str, str] = {}

  def skip(self, reason: str, example: str) -> None:
    self.counts[reason] += 1
    self._examples.setdefault(reason, example)

  def report(self) -> dict[str, int]:
    for reason, n in sorted(self.counts.items()):
      log.warning("%s: skipped %d (%s), first: %s", self.dataset, n, reason, self._examples[reason])
    return dict(self.counts)


def clean_captions(
    captions: Sequence[str], *, skips: SkipCounter, where: str
) -> tuple[str, ...]:
  """Strips captions and drops (and counts) empty ones."""
  out = []
  for c in captions:
    c = c.strip()
    if c:
      out.append(c)
    else:
      skips.skip("empty caption", where)
  return tuple(out)


def make_dataset(
    name: str,
    root: str,
    *,
    train: Sequence[Record] = (),
    query: Sequence[Record] = (),
    gallery: Sequence[Record] = (),
    test: Sequence[Record] = (),
    relabel_train: bool = True,
    skipped: Mapping[str, int] | None = None,
) -> ReIDDataset:
  """Builds the ReIDDataset: training ids relabelled (sorted mapping), `dataset` field stamped.

  `skipped` (reason -> count) is attached as the attribute `skipped` (always present, possibly {}):
  see the package docstring.
  """

  def stamp(recs: Sequence[Record]) -> list[Record]:
    return [dataclasses.replace(r, dataset=name) for r in recs]

  _check_unique(name, {"train": train, "query": query, "gallery": gallery, "test": test})
  train = records_lib.relabel(train) if relabel_train else list(train)
  ds = ReIDDataset(
      name=name, root=root, train=stamp(train), query=stamp(query), gallery=stamp(gallery),
      test=stamp(test),
  )
  ds.skipped = dict(skipped or {})  # type: ignore[attr-defined]
  return ds


def _check_unique(name: str, splits: Mapping[str, Sequence[Record]]) -> None:
  """Within a split, one image is one record: the same file twice is an error naming it (twice
  under one identity would count it double; under two identities its label is unknowable)."""
  for split, recs in splits.items():
    seen: dict[str, Record] = {}
    repeated = []
    for r in recs:
      if r.path in seen:
        repeated.append((seen[r.path], r))
      seen.setdefault(r.path, r)
    if repeated:
      first, again = repeated[0]
      what = (f"under identities {first.pid} and {again.pid}" if first.pid != again.pid
              else f"twice under identity {first.pid}")
      raise AnnotationError(
          f"{name}: {len(repeated)} image(s) of the {split} split are listed more than once; "
          f"first: {first.path} {what}")


def skipped(ds: ReIDDataset) -> dict[str, int]:
  """What the reader dropped by policy, reason -> count ({} for readers that never skip)."""
  return dict(getattr(ds, "skipped", {}))


def offset_groups(groups: Sequence[Sequence[Record]]) -> list[Record]:
  """Concatenates record groups whose raw ids must not collide (e.g. train vs. test identities).

  Each group's ids are shifted past the previous groups' largest id, so the sorted relabelling that
  follows maps group 0's ids first, then group 1's, and so on.
  """
  out: list[Record] = []
  offset = 0
  for recs in groups:
    if not recs:
      continue
    lo = min(r.pid for r in recs)
    shift = offset - lo
    out.extend(dataclasses.replace(r, pid=r.pid + shift) for r in recs)
    offset = max(r.pid for r in recs) + shift + 1
  return out


def check_split_id(split_id: int, *, dataset: str) -> None:
  if isinstance(split_id, bool) or not isinstance(split_id, int) or not 0 <= split_id < NUM_SPLITS:
    raise errors.ConfigError(
        f"{dataset}: split_id must be an int in 0..{NUM_SPLITS - 1}, got {split_id!r}")


def split_rng(split_id: int, *, dataset: str):
  """The numpy Generator for random split `split_id` (0..NUM_SPLITS-1) of a small target set."""
  import numpy as np

  check_split_id(split_id, dataset=dataset)
  return np.random.default_rng([SPLIT_SEED, split_id])
