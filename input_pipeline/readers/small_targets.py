"""The small Protocol-1 datasets: CUHK02 (a source) and GRID, PRID, VIPeR, iLIDS (targets).

The four targets are evaluated over 10 random train/test splits (`split_id` 0..9). torchreid draws
them with an unseeded RNG and caches them in a `splits.json` beside the data; we never write into
the data folder and instead draw them deterministically: split k uses
`numpy.random.default_rng([common.SPLIT_SEED, k])` (SPLIT_SEED = 0) over the sorted id list, so
every run and every machine sees the same 10 splits. Which ids are test ids and what goes into
query/gallery follows torchreid (documented per reader). GRID uses its official
`features_and_partitions.mat` partitions when the file is present.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re

from input_pipeline.readers import common
from input_pipeline.records import GALLERY, QUERY, TRAIN, Record, ReIDDataset
from input_pipeline.registry import register
from retext_jax import errors


def _by_pid(recs: list[Record]) -> dict[int, list[Record]]:
  out: dict[int, list[Record]] = collections.defaultdict(list)
  for r in recs:
    out[r.pid].append(r)
  return out


def _draw_train_ids(ids: list[int], num_train: int, split_id: int, dataset: str) -> set[int]:
  """The documented rule: permute the sorted ids with split `split_id`'s RNG, take the first n."""
  ids = sorted(ids)
  order = common.split_rng(split_id, dataset=dataset).permutation(len(ids))
  return {ids[i] for i in order[:num_train]}


def _as(recs: list[Record], split: str) -> list[Record]:
  return [dataclasses.replace(r, split=split) for r in recs]


# ------------------------------------------------------------------------------------------ CUHK02
_CUHK02_PAIRS = ("P1", "P2", "P3", "P4", "P5")
_CUHK02_LAYOUT = """  <root>/P1..P5/{cam1,cam2}/<pid>_<n>.png
  (root may also be a parent: Dataset, cuhk02/Dataset, cuhk02)"""


@register("cuhk02")
def cuhk02(root: str, combineall: bool = False, test_pair: str = "P5") -> ReIDDataset:
  """CUHK02: 5 camera pairs P1..P5 (971, 306, 107, 193, 239 ids), cameras numbered 0..9.

  torchreid protocol: P1-P4 train, `test_pair` (P5) cam1 -> query and cam2 -> gallery. Person
  numbers restart in each pair, so training ids are keyed by (pair, pid) before relabelling.
  `combineall=True` (BAU's cuhk02dg) puts all five pairs into train.
  """
  name = "cuhk02"
  if test_pair not in _CUHK02_PAIRS:
    raise errors.ConfigError(f"{name}: test_pair must be one of {_CUHK02_PAIRS}, got {test_pair!r}")
  base = common.find_root(
      root, ("", "Dataset", "cuhk02/Dataset", "cuhk02", "CUHK02/Dataset"), _CUHK02_PAIRS,
      dataset=name, layout=_CUHK02_LAYOUT,
  )
  pattern = re.compile(r"^(\d+)_")
  train_groups, query, gallery = [], [], []
  for p, pair in enumerate(_CUHK02_PAIRS):
    per_cam = []
    for c, cam in enumerate(("cam1", "cam2")):
      folder = common.require_dir(
          os.path.join(base, pair, cam), dataset=name, layout=_CUHK02_LAYOUT
      )
      recs = []
      for path in common.list_images(folder, (".png",)):
        (pid,) = common.parse_name(path, pattern, dataset=name, expected="'<pid>_<n>.png'")
        recs.append(Record(path=path, pid=pid, camid=2 * p + c, split=TRAIN))
      per_cam.append(recs)
    if pair == test_pair and not combineall:
      query += _as(per_cam[0], QUERY)
      gallery += _as(per_cam[1], GALLERY)
    else:
      train_groups.append(per_cam[0] + per_cam[1])
  return common.make_dataset(
      name, base, train=common.offset_groups(train_groups), query=query, gallery=gallery
  )


# -------------------------------------------------------------------------------------------- GRID
_GRID_LAYOUT = """  <root>/probe/<id>_<cam>_....jpeg   (250 ids, id 0000 never used in probe)
  <root>/gallery/<id>_<cam>_....jpeg (the 250 ids + 775 distractors with id 0000)
  <root>/features_and_partitions.mat (optional: the official 10 partitions)
  (root may also be a parent: underground_reid, grid/underground_reid, underground_grid/...)"""


def _grid_mat_train_ids(mat_path: str, split_id: int) -> set[int]:
  from scipy.io import loadmat

  try:
    parts = loadmat(mat_path)["trainIdxAll"][0]
    # Each partition is a MATLAB struct whose third field holds the 125 training ids.
    return {int(i) for i in parts[split_id][0][0][2][0]}
  except (KeyError, IndexError, TypeError, ValueError) as e:
    raise common.AnnotationError(
        f"grid: cannot read partition {split_id} from {mat_path}: expected a 'trainIdxAll' cell "
        f"of 10 structs whose third field lists the training ids ({type(e).__name__}: {e})"
    ) from e


@register("grid")
def grid(root: str, split_id: int = 0) -> ReIDDataset:
  """GRID: 250 paired ids over 8 cameras plus 775 gallery distractors (id 0).

  Split `split_id`: train ids are partition `split_id` of `features_and_partitions.mat` when
  present (the official 125/125 partitions, as torchreid), otherwise half of the ids drawn with
  the fixed-seed RNG. Train = every probe and gallery image of train ids; query = probe images of
  the other ids; gallery = gallery images of the other ids including the distractors (id 0).
  """
  name = "grid"
  common.check_split_id(split_id, dataset=name)
  base = common.find_root(
      root,
      ("", "underground_reid", "grid/underground_reid", "GRID/underground_reid",
       "underground_grid/underground_reid", "underground_grid"),
      ("probe", "gallery"), dataset=name, layout=_GRID_LAYOUT,
  )
  pattern = re.compile(r"^(\d+)_(\d+)_")

  def read(folder: str) -> list[Record]:
    out = []
    for path in common.list_images(os.path.join(base, folder), (".jpeg", ".jpg")):
      pid, cam = common.parse_name(path, pattern, dataset=name, expected="'<id>_<camera>_...'")
      if not 1 <= cam <= 8:
        raise common.AnnotationError(f"{name}: camera {cam} in {path!r} is outside 1..8")
      out.append(Record(path=path, pid=pid, camid=cam - 1, split=TRAIN))
    return out

  probe, gal = read("probe"), read("gallery")
  mat_path = os.path.join(base, "features_and_partitions.mat")
  if os.path.isfile(mat_path):
    train_ids = _grid_mat_train_ids(mat_path, split_id)
  else:
    ids = sorted({r.pid for r in probe} - {0})
    train_ids = _draw_train_ids(ids, len(ids) // 2, split_id, name)
  train = [r for r in probe + gal if r.pid in train_ids]
  query = _as([r for r in probe if r.pid not in train_ids], QUERY)
  gallery = _as([r for r in gal if r.pid not in train_ids], GALLERY)
  return common.make_dataset(name, base, train=train, query=query, gallery=gallery)


# -------------------------------------------------------------------------------------------- PRID
_PRID_LAYOUT = """  <root>/cam_a/person_0001.png ... person_0385.png
  <root>/cam_b/person_0001.png ... person_0749.png   (only ids 1..200 are the same people)
  (root may also be a parent: single_shot, prid_2011/single_shot, prid2011/prid_2011/single_shot)"""


@register("prid")
def prid(root: str, split_id: int = 0, paired_ids: int = 200) -> ReIDDataset:
  """PRID-2011 single-shot: two cameras; ids 1..`paired_ids` (200) are seen by both.

  Higher numbers are different people in each camera. As torchreid: half of the paired ids train
  (both images, relabelled); the other half give query = their cam_a image and gallery = their
  cam_b image; every cam_b image above `paired_ids` joins the gallery as a distractor; cam_a images
  above `paired_ids` are unused.
  """
  name = "prid"
  common.check_split_id(split_id, dataset=name)
  base = common.find_root(
      root,
      ("", "single_shot", "prid_2011/single_shot", "prid2011/prid_2011/single_shot",
       "prid2011/single_shot"),
      ("cam_a", "cam_b"), dataset=name, layout=_PRID_LAYOUT,
  )
  pattern = re.compile(r"^person_(\d+)\.png$", re.IGNORECASE)

  def read(cam: str, camid: int) -> dict[int, Record]:
    out = {}
    for path in common.list_images(os.path.join(base, cam), (".png",)):
      (pid,) = common.parse_name(path, pattern, dataset=name, expected="'person_<id>.png'")
      out[pid] = Record(path=path, pid=pid, camid=camid, split=TRAIN)
    return out

  cam_a, cam_b = read("cam_a", 0), read("cam_b", 1)
  paired = list(range(1, paired_ids + 1))
  for cam, recs in (("cam_a", cam_a), ("cam_b", cam_b)):
    missing = [p for p in paired if p not in recs]
    if missing:
      raise common.LayoutError(
          f"{name}: {os.path.join(base, cam)} lacks person_{missing[0]:04d}.png (ids "
          f"1..{paired_ids} must be in both cameras; {len(missing)} missing)"
      )
  train_ids = _draw_train_ids(paired, paired_ids // 2, split_id, name)
  test_ids = [p for p in paired if p not in train_ids]
  train = [rec for p in sorted(train_ids) for rec in (cam_a[p], cam_b[p])]
  query = _as([cam_a[p] for p in test_ids], QUERY)
  distractors = [cam_b[p] for p in sorted(cam_b) if p > paired_ids]
  gallery = _as([cam_b[p] for p in test_ids] + distractors, GALLERY)
  return common.make_dataset(name, base, train=train, query=query, gallery=gallery)


# ------------------------------------------------------------------------------------------- VIPeR
_VIPER_LAYOUT = """  <root>/cam_a/<id>_<angle>.bmp   (632 ids, one image each)
  <root>/cam_b/<id>_<angle>.bmp   (the same 632 ids)
  (root may also be a parent: VIPeR, viper/VIPeR)"""


@register("viper")
def viper(root: str, split_id: int = 0, query_cam: str = "a") -> ReIDDataset:
  """VIPeR: 632 ids, one image per camera.

  As torchreid: half of the ids (316) train with both images; the other half are test ids with
  query = cam_a, gallery = cam_b (`query_cam="b"` swaps them: torchreid's odd split ids).
  """
  name = "viper"
  common.check_split_id(split_id, dataset=name)
  if query_cam not in ("a", "b"):
    raise errors.ConfigError(f"{name}: query_cam must be 'a' or 'b', got {query_cam!r}")
  base = common.find_root(
      root, ("", "VIPeR", "viper/VIPeR", "viper"), ("cam_a", "cam_b"), dataset=name,
      layout=_VIPER_LAYOUT,
  )
  pattern = re.compile(r"^(\d+)_")

  def read(cam: str, camid: int) -> dict[int, Record]:
    out = {}
    for path in common.list_images(os.path.join(base, cam), (".bmp",)):
      (pid,) = common.parse_name(path, pattern, dataset=name, expected="'<id>_<angle>.bmp'")
      if pid in out:
        raise common.AnnotationError(f"{name}: two images of id {pid} in {cam}: {path!r}")
      out[pid] = Record(path=path, pid=pid, camid=camid, split=TRAIN)
    return out

  cam_a, cam_b = read("cam_a", 0), read("cam_b", 1)
  unpaired = sorted(set(cam_a) ^ set(cam_b))
  if unpaired:
    raise common.AnnotationError(
        f"{name}: ids {unpaired[:10]} have an image in only one of {base}/cam_a and cam_b"
    )
  ids = sorted(cam_a)
  train_ids = _draw_train_ids(ids, len(ids) // 2, split_id, name)
  test_ids = [p for p in ids if p not in train_ids]
  train = [rec for p in sorted(train_ids) for rec in (cam_a[p], cam_b[p])]
  q_cam, g_cam = (cam_a, cam_b) if query_cam == "a" else (cam_b, cam_a)
  query = _as([q_cam[p] for p in test_ids], QUERY)
  gallery = _as([g_cam[p] for p in test_ids], GALLERY)
  return common.make_dataset(name, base, train=train, query=query, gallery=gallery)


# ------------------------------------------------------------------------------------------- iLIDS
_ILIDS_LAYOUT = """  <root>/Persons/<pid:4><n:3>.jpg, e.g. 0001001.jpg (119 ids, 476 images)
  (root may also be a parent: i-LIDS_Pedestrian, QMUL-iLIDS/i-LIDS_Pedestrian,
   ilids/i-LIDS_Pedestrian)"""


@register("ilids")
def ilids(root: str, split_id: int = 0) -> ReIDDataset:
  """QMUL iLIDS: 119 ids, 2-8 images each, camera = the 3-digit image number - 1 (as torchreid).

  As torchreid: int(0.5 * #ids) ids train with all their images; for every other id two of its
  images are drawn, the first for the query and the second for the gallery.
  """
  name = "ilids"
  rng = common.split_rng(split_id, dataset=name)
  base = common.find_root(
      root,
      ("", "i-LIDS_Pedestrian", "QMUL-iLIDS/i-LIDS_Pedestrian", "ilids/i-LIDS_Pedestrian"),
      ("Persons",), dataset=name, layout=_ILIDS_LAYOUT,
  )
  pattern = re.compile(r"^(\d{4})(\d{3})\.jpg$", re.IGNORECASE)
  recs = []
  for path in common.list_images(os.path.join(base, "Persons"), (".jpg",)):
    pid, n = common.parse_name(path, pattern, dataset=name, expected="'<pid:4><n:3>.jpg'")
    recs.append(Record(path=path, pid=pid, camid=n - 1, split=TRAIN))
  by_pid = _by_pid(recs)
  ids = sorted(by_pid)
  order = rng.permutation(len(ids))
  train_ids = {ids[i] for i in order[: int(len(ids) * 0.5)]}
  train, query, gallery = [], [], []
  for pid in ids:
    imgs = by_pid[pid]
    if pid in train_ids:
      train += imgs
      continue
    if len(imgs) < 2:
      raise common.AnnotationError(
          f"{name}: test id {pid} has {len(imgs)} image ({imgs[0].path}); every id needs two "
          "(one query, one gallery)"
      )
    q, g = rng.choice(len(imgs), size=2, replace=False)
    query.append(dataclasses.replace(imgs[q], split=QUERY))
    gallery.append(dataclasses.replace(imgs[g], split=GALLERY))
  return common.make_dataset(name, base, train=train, query=query, gallery=gallery)
