"""The record every reader yields, and the split container the pipelines consume.

Readers turn an on-disk dataset into plain records; everything downstream (tf.data pipelines,
TFDS builders, evaluation) only sees these, never a dataset's own layout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from retext_jax import errors

TRAIN, QUERY, GALLERY, TEST = "train", "query", "gallery", "test"


@dataclasses.dataclass(frozen=True)
class Record:
  """One image.

  Attributes:
    path: absolute path of the image file.
    pid: person id. Training ids are relabelled to 0..N-1 through a sorted mapping; query and
      gallery ids keep the dataset's own values (0 = Market distractor, kept in the gallery).
    camid: 0-based camera id (-1 where a dataset has no camera information, e.g. captioned sets).
    split: one of "train", "query", "gallery", "test".
    captions: natural-language descriptions (captioned datasets only).
    dataset: registry name of the dataset the record came from.
    attributes: free-form attribute strings where the dataset provides them (SYNTH-PEDES).
  """

  path: str
  pid: int
  camid: int
  split: str
  captions: tuple[str, ...] = ()
  dataset: str = ""
  attributes: tuple[str, ...] = ()


@dataclasses.dataclass
class ReIDDataset:
  """The splits of one dataset. Empty lists for splits a dataset does not have."""

  name: str
  root: str
  train: list[Record] = dataclasses.field(default_factory=list)
  query: list[Record] = dataclasses.field(default_factory=list)
  gallery: list[Record] = dataclasses.field(default_factory=list)
  test: list[Record] = dataclasses.field(default_factory=list)
  # Records a reader dropped by policy (e.g. "empty caption"), reason -> count; logged too.
  skipped: dict[str, int] = dataclasses.field(default_factory=dict)

  @property
  def num_train_pids(self) -> int:
    return len({r.pid for r in self.train})

  @property
  def num_train_cams(self) -> int:
    return len({r.camid for r in self.train})

  def split(self, name: str) -> list[Record]:
    if name not in (TRAIN, QUERY, GALLERY, TEST):
      raise errors.ConfigError(f"unknown split {name!r}; expected train, query, gallery or test")
    return getattr(self, name)

  def summary(self) -> str:
    rows = []
    for name in (TRAIN, QUERY, GALLERY, TEST):
      recs = self.split(name)
      if recs:
        rows.append(
            f"  {name:8s} images={len(recs):7d} ids={len({r.pid for r in recs}):6d} "
            f"cams={len({r.camid for r in recs}):3d}"
        )
    return f"{self.name} ({self.root})\n" + "\n".join(rows)


def relabel(records: Sequence[Record]) -> list[Record]:
  """Maps person ids to 0..N-1 through the sorted list of distinct ids."""
  mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
  return [dataclasses.replace(r, pid=mapping[r.pid]) for r in records]


def disjoint_ids(sets: list[tuple[ReIDDataset, float]]
                 ) -> tuple[list[tuple[list[Record], float]], int]:
  """Training records of several sources with disjoint id ranges (one classifier over all).

  Each source's ids are relabelled 0..N-1 (sorted) and shifted past the previous sources'.
  """
  out, offset = [], 0
  for ds, weight in sets:
    recs = [dataclasses.replace(r, pid=r.pid + offset) for r in relabel(ds.train)]
    offset += len({r.pid for r in recs})
    out.append((recs, weight))
  return out, offset
