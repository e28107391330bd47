"""Datasets in the Market-1501 layout: `bounding_box_train/`, `query/`, `bounding_box_test/`.

Image names start with `<pid>_c<cam>` (e.g. `0002_c1s1_000451_03.jpg`). Market-1501,
DukeMTMC-reID, CUHK03-NP and the Re-ID crops of CUHK-SYSU all use it.

`combineall=True` is the domain-generalisation usage (BAU's `market1501dg`, Protocols 1 and 3):
train, query and gallery all go into `train`, the identities of the official train split and of
the test split kept apart (they are different people even where numbers coincide), junk and
distractor images dropped.
"""

from __future__ import annotations

import dataclasses
import os
import re

from input_pipeline.readers import common
from input_pipeline.records import GALLERY, QUERY, TRAIN, Record, ReIDDataset
from input_pipeline.registry import register
from retext_jax import errors

_PID_CAM = re.compile(r"^([-\d]+)_c(\d+)")
_SPLIT_DIRS = {TRAIN: "bounding_box_train", QUERY: "query", GALLERY: "bounding_box_test"}


@dataclasses.dataclass(frozen=True)
class Spec:
  name: str
  candidates: tuple[str, ...]
  extensions: tuple[str, ...]
  num_cams: int
  cam_base: int = 1  # first camera number in file names (CUHK-SYSU crops number cameras from 0)
  junk_pids: tuple[int, ...] = ()  # dropped everywhere
  distractor_pids: tuple[int, ...] = ()  # kept in the gallery, dropped by combineall
  splits: tuple[str, ...] = (TRAIN, QUERY, GALLERY)  # required sub-folders
  optional_splits: tuple[str, ...] = ()


def _layout(spec: Spec, base: str = "<root>") -> str:
  folders = [_SPLIT_DIRS[s] for s in spec.splits]
  folders += [_SPLIT_DIRS[s] + " (optional)" for s in spec.optional_splits]
  ext = "|".join(spec.extensions)
  return (
      f"  {base}/{{{', '.join(folders)}}}/<pid>_c<cam>...{ext}\n"
      f"  (root may also be a parent: {', '.join(c for c in spec.candidates if c)})"
  )


def _read_folder(folder: str, split: str, spec: Spec) -> list[Record]:
  out = []
  for path in common.list_images(folder, spec.extensions):
    pid, cam = common.parse_name(
        path, _PID_CAM, dataset=spec.name, expected="'<pid>_c<camera>...' e.g. 0002_c1s1_000451_03"
    )
    if pid in spec.junk_pids:
      continue
    camid = cam - spec.cam_base
    if not 0 <= camid < spec.num_cams:
      raise common.AnnotationError(
          f"{spec.name}: camera {cam} in {path!r} is outside "
          f"{spec.cam_base}..{spec.cam_base + spec.num_cams - 1}"
      )
    out.append(Record(path=path, pid=pid, camid=camid, split=split))
  return out


def read_layout(spec: Spec, root: str, combineall: bool) -> ReIDDataset:
  """Reads a Market-layout dataset described by `spec` (shared with the MSMT17 conversion)."""
  base = common.find_root(
      root, spec.candidates, [_SPLIT_DIRS[s] for s in spec.splits], dataset=spec.name,
      layout=_layout(spec),
  )
  parts: dict[str, list[Record]] = {}
  for split in spec.splits + spec.optional_splits:
    folder = os.path.join(base, _SPLIT_DIRS[split])
    parts[split] = _read_folder(folder, split, spec) if os.path.isdir(folder) else []
  if combineall:
    keep = lambda recs: [
        dataclasses.replace(r, split=TRAIN) for r in recs if r.pid not in spec.distractor_pids
    ]
    train = common.offset_groups(
        [keep(parts[TRAIN]), keep(parts.get(QUERY, []) + parts.get(GALLERY, []))]
    )
    return common.make_dataset(spec.name, base, train=train)
  return common.make_dataset(
      spec.name, base, train=parts[TRAIN], query=parts.get(QUERY, []),
      gallery=parts.get(GALLERY, []),
  )


_MARKET = Spec(
    name="market1501",
    candidates=("", "Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "market1501",
                "Market-1501"),
    extensions=(".jpg",),
    num_cams=6,
    junk_pids=(-1,),
    distractor_pids=(0,),
)

_DUKE = Spec(
    name="dukemtmcreid",
    candidates=("", "DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID", "dukemtmc-reid"),
    extensions=(".jpg",),
    num_cams=8,
)

_OCCLUDED_DUKE = Spec(
    name="occluded_duke",
    candidates=("", "Occluded_Duke", "occluded_duke", "Occluded-Duke", "occluded-duke"),
    extensions=(".jpg",),
    num_cams=8,
)

_CUHKSYSU = Spec(
    name="cuhksysu",
    candidates=("", "CUHK-SYSU", "cuhksysu", "cuhk-sysu"),
    extensions=(".jpg",),
    num_cams=2,
    cam_base=0,
    splits=(TRAIN,),
    optional_splits=(QUERY, GALLERY),
)


@register("market1501")
def market1501(root: str, combineall: bool = False) -> ReIDDataset:
  """Market-1501: 12,936 train / 3,368 query / 15,913 gallery images, 6 cameras.

  Id -1 (junk) is dropped; id 0 (distractors) stays in the gallery with its raw id 0.
  `combineall=True` merges all three folders into train without junk and distractors (BAU's
  Market1501_DG, 1,501 identities).
  """
  return read_layout(_MARKET, root, combineall)


@register("dukemtmcreid")
def dukemtmcreid(root: str, combineall: bool = False) -> ReIDDataset:
  """DukeMTMC-reID: 16,522 train / 2,228 query / 17,661 gallery images, 8 cameras."""
  return read_layout(_DUKE, root, combineall)


@register("occluded_duke")
def occluded_duke(root: str, combineall: bool = False) -> ReIDDataset:
  """Occluded-Duke (Miao et al. 2019): DukeMTMC-reID re-split so that queries are occluded;
  15,618 train / 2,210 query / 17,661 gallery images, 8 cameras, Duke's file names.
  Layout `Occluded_Duke/{bounding_box_train,query,bounding_box_test}/*.jpg`."""
  return read_layout(_OCCLUDED_DUKE, root, combineall)


@register("cuhk03_np")
def cuhk03_np(root: str, variant: str = "detected", combineall: bool = False) -> ReIDDataset:
  """CUHK03-NP (the 767/700 protocol), `variant` "detected" (BAU's choice) or "labeled".

  Layout `cuhk03-np/<variant>/{bounding_box_train,query,bounding_box_test}/*.png`, two cameras.
  """
  if variant not in ("detected", "labeled"):
    raise errors.ConfigError(f"cuhk03_np: variant must be 'detected' or 'labeled', got {variant!r}")
  spec = Spec(
      name="cuhk03_np",
      candidates=(variant, f"cuhk03-np/{variant}", f"cuhk03_np/{variant}", f"CUHK03-NP/{variant}",
                  ""),
      extensions=(".png",),
      num_cams=2,
  )
  return read_layout(spec, root, combineall)


@register("cuhksysu")
def cuhksysu(root: str, combineall: bool = False) -> ReIDDataset:
  """CUHK-SYSU Re-ID crops as BAU uses them: `CUHK-SYSU/bounding_box_train/*.jpg`.

  File names `<pid>_c<cam>...` with cameras already 0-based (0 or 1). Only the train folder is
  required (CUHK-SYSU is a source only); `query/` and `bounding_box_test/` are read if present, and
  `combineall=True` merges them into train.
  """
  return read_layout(_CUHKSYSU, root, combineall)
