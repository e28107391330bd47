"""Your own data: a folder of images plus one list file (CSV or JSON) that labels them.

CSV (`annotations.csv`), with a header row::

    path,pid,camid,split,caption
    train/0001_a.jpg,1,0,train,a man in a red jacket
    train/0001_b.jpg,1,1,train,
    probe/0007.png,7,0,query,
    gallery/0007.png,7,1,gallery,
    gallery/0000_junk.png,0,2,gallery,

JSON (`annotations.json`), a list of objects with the same keys (`caption` a string, or
`captions` a list of strings)::

    [{"path": "train/0001_a.jpg", "pid": 1, "camid": 0, "split": "train",
      "captions": ["a man in a red jacket", "a man with a black backpack"]}]

Rules: `path` is relative to the folder of the list file and stays inside it (`../` is an
error; absolute paths are kept, for images elsewhere); `pid` and
`camid` are integers (camid -1 = unknown camera); `split` is train, query, gallery or test;
`caption` is optional. Training ids are relabelled 0..N-1 in sorted order, the others keep your
values. An image listed on several rows is one record whose captions are the rows' captions.
"""

from __future__ import annotations

import csv
import os

from input_pipeline.readers import common
from input_pipeline.records import GALLERY, QUERY, TEST, TRAIN, Record, ReIDDataset
from input_pipeline.registry import register

NAME = "custom"
_DEFAULT_FILES = ("annotations.csv", "annotations.json")
_REQUIRED = ("path", "pid", "camid", "split")
_OPTIONAL = ("caption", "captions")
_SPLITS = (TRAIN, QUERY, GALLERY, TEST)
_LAYOUT = """  <root>/annotations.csv  (header: path,pid,camid,split[,caption])
  or <root>/annotations.json (list of {"path", "pid", "camid", "split"[, "caption"|"captions"]})
  image paths relative to the list file's folder"""


@register(NAME)
def custom(
    root: str,
    annotations: str | None = None,
    check_images: bool = True,
    require_captions: bool = False,
    dataset_name: str = NAME,
) -> ReIDDataset:
  """Reads a dataset described by a CSV or JSON list file (format in the module docstring).

  Args:
    root: the data folder, or the list file itself.
    annotations: list file name inside `root` (or an absolute path); default `annotations.csv`,
      then `annotations.json`.
    check_images: verify every listed image exists.
    require_captions: skip (count and log) images that end up with no caption, as the captioned
      readers do; by default uncaptioned images are kept (mixed captioned/uncaptioned sets).
    dataset_name: the `dataset` field of the records (tells several custom sets apart in a mix).
  """
  list_path = _find_list(root, annotations)
  base = os.path.dirname(list_path)
  if list_path.lower().endswith(".json"):
    rows = _json_rows(list_path)
  elif list_path.lower().endswith(".csv"):
    rows = _csv_rows(list_path)
  else:
    raise common.AnnotationError(f"{NAME}: list file {list_path} must end in .csv or .json")

  skips = common.SkipCounter(dataset_name)
  by_path: dict[str, Record] = {}
  for where, row in rows:
    rec = _parse_row(row, where, base)
    if check_images and rec.path not in by_path:
      common.check_image(rec.path, source=where, dataset=NAME)
    captions = common.clean_captions(row.get("captions", ()), skips=skips, where=where)
    prev = by_path.get(rec.path)
    if prev is None:
      by_path[rec.path] = Record(rec.path, rec.pid, rec.camid, rec.split, captions)
    elif (prev.pid, prev.camid, prev.split) != (rec.pid, rec.camid, rec.split):
      raise common.AnnotationError(
          f"{NAME}: {where}: image {rec.path} is listed again with different labels "
          f"(pid/camid/split {rec.pid}/{rec.camid}/{rec.split} vs "
          f"{prev.pid}/{prev.camid}/{prev.split})"
      )
    else:
      by_path[rec.path] = Record(rec.path, rec.pid, rec.camid, rec.split, prev.captions + captions)

  parts: dict[str, list[Record]] = {s: [] for s in _SPLITS}
  for rec in by_path.values():
    if require_captions and not rec.captions:
      skips.skip("image without captions", rec.path)
      continue
    parts[rec.split].append(rec)
  return common.make_dataset(
      dataset_name, base, train=parts[TRAIN], query=parts[QUERY], gallery=parts[GALLERY],
      test=parts[TEST], skipped=skips.report(),
  )


def _find_list(root: str, annotations: str | None) -> str:
  root = os.path.abspath(os.path.expanduser(root))
  if os.path.isfile(root):
    return root
  if not os.path.isdir(root):
    raise common.LayoutError(
        f"{NAME}: {root} is neither a folder nor a list file.\nExpected layout:\n{_LAYOUT}"
    )
  names = (annotations,) if annotations else _DEFAULT_FILES
  for n in names:
    path = os.path.join(root, n)
    if os.path.isfile(path):
      return path
  searched = ", ".join(os.path.join(root, n) for n in names)
  raise common.LayoutError(
      f"{NAME}: no list file found (searched {searched}).\nExpected layout:\n{_LAYOUT}"
  )


def _csv_rows(path: str) -> list[tuple[str, dict]]:
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    missing = [c for c in _REQUIRED if c not in header]
    unknown = [c for c in header if c not in _REQUIRED + ("caption",)]
    if missing or unknown:
      raise common.AnnotationError(
          f"{NAME}: {path} header {header} must have columns {', '.join(_REQUIRED)} "
          f"[, caption]; missing {missing}, unknown {unknown}"
      )
    out = []
    for row in reader:
      where = f"{path} line {reader.line_num}"
      if None in row or any(row[c] is None for c in header):
        raise common.AnnotationError(
            f"{NAME}: {where}: expected {len(header)} comma-separated fields ({', '.join(header)})"
        )
      cap = row.pop("caption", "") or ""
      row["captions"] = [cap] if cap.strip() else []
      out.append((where, row))
  return out


def _json_rows(path: str) -> list[tuple[str, dict]]:
  out = []
  for i, entry in enumerate(common.json_entries(path, dataset=NAME)):
    where = f"{path} entry #{i}"
    for key in _REQUIRED:
      common.field(entry, key, source=path, index=i, dataset=NAME)
    unknown = sorted(set(entry) - set(_REQUIRED + _OPTIONAL))
    if unknown:
      raise common.AnnotationError(
          f"{NAME}: {where} has unknown fields {unknown}; allowed: {_REQUIRED + _OPTIONAL}"
      )
    row = dict(entry)
    captions = []
    for key in _OPTIONAL:
      if key in row:
        captions += common.str_list_field(row, key, source=path, index=i, dataset=NAME)
    row["captions"] = captions
    out.append((where, row))
  return out


def _parse_row(row: dict, where: str, base: str) -> Record:
  values = {}
  for key in ("pid", "camid"):
    v = row[key]
    try:
      if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError
      values[key] = int(v.strip() if isinstance(v, str) else v)
    except (TypeError, ValueError):
      raise common.AnnotationError(
          f"{NAME}: {where}: {key} must be an integer, got {v!r}"
      ) from None
  if values["camid"] < -1:
    raise common.AnnotationError(f"{NAME}: {where}: camid must be >= -1, got {values['camid']}")
  split = row["split"].strip() if isinstance(row["split"], str) else row["split"]
  if split not in _SPLITS:
    raise common.AnnotationError(
        f"{NAME}: {where}: split must be one of {', '.join(_SPLITS)}, got {split!r}"
    )
  rel = row["path"]
  if not isinstance(rel, str) or not rel.strip():
    raise common.AnnotationError(f"{NAME}: {where}: path must be a non-empty string, got {rel!r}")
  path = os.path.normpath(os.path.join(base, rel.strip()))
  if not os.path.isabs(rel.strip()) and os.path.relpath(path, base).startswith(os.pardir):
    raise common.AnnotationError(
        f"{NAME}: {where}: path {rel!r} leaves the list file's folder {base}; give an absolute "
        "path to use images elsewhere")
  return Record(path=path, pid=values["pid"], camid=values["camid"], split=split)
