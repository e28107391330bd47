"""MSMT17 (V1 and V2) from its list files, or a Market-style conversion of it.

V1: `MSMT17_V1/{train,test}/<pid>/<pid>_<n>_<cam>_....jpg` with `list_{train,val,query,gallery}.txt`
(`<relative path> <pid>` per line; train/val paths relative to `train/`, query/gallery to
`test/`). V2 is the same with `mask_train_v2/`, `mask_test_v2/` (faces blurred). Some code bases
(BAU's MSMT17_DG) convert it to the Market layout (`bounding_box_train/` etc., names
`<pid>_c<cam>_...`); that is read too.
"""

from __future__ import annotations

import dataclasses
import os

from input_pipeline.readers import common, market_style
from input_pipeline.records import GALLERY, QUERY, TRAIN, Record, ReIDDataset
from input_pipeline.registry import register

NAME = "msmt17"
NUM_CAMS = 15
_VERSIONS = {"train": "test", "mask_train_v2": "mask_test_v2"}  # train folder -> test folder
_LAYOUT = """  <root>/list_train.txt, list_query.txt, list_gallery.txt[, list_val.txt]
  <root>/train/ and <root>/test/            (MSMT17_V1)
  <root>/mask_train_v2/ and mask_test_v2/   (MSMT17_V2)
  or the Market-style conversion <root>/{bounding_box_train,query,bounding_box_test}/
  (root may also be a parent: MSMT17_V1, MSMT17_V2, msmt17/MSMT17_V1, msmt17/MSMT17_V2, MSMT17)"""
_CANDIDATES = ("", "MSMT17_V1", "MSMT17_V2", "msmt17/MSMT17_V1", "msmt17/MSMT17_V2", "MSMT17",
               "msmt17")


def _read_list(list_path: str, image_dir: str, split: str, check_images: bool) -> list[Record]:
  if not os.path.isfile(list_path):
    raise common.LayoutError(f"{NAME}: missing list file {list_path}.\nExpected layout:\n{_LAYOUT}")
  out = []
  with open(list_path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      line = line.strip()
      if not line:
        continue
      where = f"{list_path} line {lineno}"
      parts = line.split()
      if len(parts) != 2:
        raise common.AnnotationError(
            f"{NAME}: {where}: expected '<relative image path> <pid>', got {line!r}"
        )
      rel, pid_text = parts
      try:
        pid = int(pid_text)
      except ValueError:
        raise common.AnnotationError(
            f"{NAME}: {where}: pid {pid_text!r} is not an integer"
        ) from None
      fields = os.path.basename(rel).split("_")
      try:
        camid = int(fields[2]) - 1
      except (IndexError, ValueError):
        raise common.AnnotationError(
            f"{NAME}: {where}: cannot parse camera from image name {rel!r} "
            "(expected <pid>_<n>_<camera>_..., e.g. 0000_000_01_0303morning_0015_0.jpg)"
        ) from None
      if not 0 <= camid < NUM_CAMS:
        raise common.AnnotationError(
            f"{NAME}: {where}: camera {camid + 1} is outside 1..{NUM_CAMS}"
        )
      path = os.path.join(image_dir, rel)
      if check_images:
        common.check_image(path, source=where, dataset=NAME)
      out.append(Record(path=path, pid=pid, camid=camid, split=split))
  return out


@register(NAME)
def msmt17(
    root: str, with_val: bool = False, combineall: bool = False, check_images: bool = True
) -> ReIDDataset:
  """MSMT17: 4,101 identities, 15 cameras; 32,621 train (30,248 list_train + 2,373 list_val).

  Args:
    root: the MSMT17_V1/MSMT17_V2 folder or a parent (see the module docstring).
    with_val: append `list_val.txt` to train (the 32,621-image training set of most papers;
      torchreid leaves it out unless combining).
    combineall: train + val + query + gallery all into `train` (Protocol-3 `msmt17dg`), train and
      test identities kept apart.
    check_images: verify every listed image exists (one stat per line; off for slow file systems).
  """
  base = common.find_root(
      root, _CANDIDATES, [("list_train.txt", "bounding_box_train")], dataset=NAME, layout=_LAYOUT
  )
  if not os.path.exists(os.path.join(base, "list_train.txt")):
    spec = market_style.Spec(name=NAME, candidates=("",), extensions=(".jpg",), num_cams=NUM_CAMS)
    return market_style.read_layout(spec, base, combineall)
  train_name = next((t for t in _VERSIONS if os.path.isdir(os.path.join(base, t))), None)
  if train_name is None or not os.path.isdir(os.path.join(base, _VERSIONS[train_name])):
    raise common.LayoutError(
        f"{NAME}: {base} has list files but no train/test (V1) or mask_train_v2/mask_test_v2 (V2) "
        f"folders.\nExpected layout:\n{_LAYOUT}"
    )
  train_dir = os.path.join(base, train_name)
  test_dir = os.path.join(base, _VERSIONS[train_name])
  lst = lambda n: os.path.join(base, f"list_{n}.txt")
  train = _read_list(lst("train"), train_dir, TRAIN, check_images)
  query = _read_list(lst("query"), test_dir, QUERY, check_images)
  gallery = _read_list(lst("gallery"), test_dir, GALLERY, check_images)
  if with_val or combineall:
    train += _read_list(lst("val"), train_dir, TRAIN, check_images)
  if combineall:
    as_train = lambda recs: [dataclasses.replace(r, split=TRAIN) for r in recs]
    train = common.offset_groups([train, as_train(query + gallery)])
    return common.make_dataset(NAME, base, train=train)
  return common.make_dataset(NAME, base, train=train, query=query, gallery=gallery)
