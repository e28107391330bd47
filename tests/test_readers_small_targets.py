"""CUHK02 and the Protocol-1 targets (GRID, PRID, VIPeR, iLIDS) with their split rules."""

import os

import numpy as np
import pytest
import scipy.io
from reader_utils import cams, ids, write_images

from input_pipeline import registry
from input_pipeline.readers import common


def _reference_train_ids(all_ids, n_train, split_id):
  # The documented rule, re-derived: numpy default_rng([0, k]) permutes the sorted ids.
  order = np.random.default_rng([0, split_id]).permutation(len(all_ids))
  return {sorted(all_ids)[i] for i in order[:n_train]}


# ------------------------------------------------------------------------------------------ CUHK02
def _write_cuhk02(base):
  layout = {"P1": ([1, 2], [1, 2, 2]), "P2": ([1], [1]), "P3": ([3], [3]), "P4": ([4], [4]),
            "P5": ([1, 2], [1, 2])}
  for pair, (cam1, cam2) in layout.items():
    write_images(base / pair / "cam1", [f"{p:03d}_{i:02d}.png" for i, p in enumerate(cam1)])
    write_images(base / pair / "cam2", [f"{p:03d}_{i + 5:02d}.png" for i, p in enumerate(cam2)])


def test_cuhk02_p5_test_pair_and_per_pair_ids(tmp_path):
  _write_cuhk02(tmp_path / "cuhk02" / "Dataset")
  ds = registry.get_dataset("cuhk02", str(tmp_path))
  assert (len(ds.train), len(ds.query), len(ds.gallery)) == (2 + 3 + 2 + 2 + 2, 2, 2)
  # P1 ids 1,2 and P2 id 1 are three different people: 5 training ids over P1..P4.
  assert ds.num_train_pids == 5 and ids(ds.train) == {0, 1, 2, 3, 4}
  assert cams(ds.train) == set(range(8))
  p2 = {r.pid for r in ds.train if "/P2/" in r.path}
  p1 = {r.pid for r in ds.train if "/P1/" in r.path}
  assert p1 == {0, 1} and p2 == {2}
  assert ids(ds.query) == {1, 2} and cams(ds.query) == {8} and cams(ds.gallery) == {9}


def test_cuhk02_combineall(tmp_path):
  _write_cuhk02(tmp_path / "Dataset")
  ds = registry.get_dataset("cuhk02", str(tmp_path), combineall=True)
  assert (len(ds.train), len(ds.query), len(ds.gallery)) == (15, 0, 0)
  assert ds.num_train_pids == 7 and cams(ds.train) == set(range(10))


# -------------------------------------------------------------------------------------------- GRID
def _write_grid(base, with_mat):
  probe = [f"{i:04d}_{(i % 8) + 1}_25004_107_32_130.jpeg" for i in range(1, 7)]
  gallery = [f"{i:04d}_{((i + 3) % 8) + 1}_25004_108_31_120.jpeg" for i in range(1, 7)]
  gallery += ["0000_2_25004_999_10_90.jpeg", "0000_7_25005_998_11_91.jpeg"]
  write_images(base / "probe", probe)
  write_images(base / "gallery", gallery)
  if with_mat:
    cell = np.empty((1, 10), dtype=object)
    for k in range(10):
      struct = np.empty((1, 1), dtype=[("idxProbe", "O"), ("idxGallery", "O"), ("idxTrain", "O")])
      struct[0, 0] = (np.zeros((1, 1)), np.zeros((1, 1)),
                      np.array([[1, 3, 5]] if k % 2 == 0 else [[2, 4, 6]], dtype=np.float64))
      cell[0, k] = struct
    scipy.io.savemat(str(base / "features_and_partitions.mat"), {"trainIdxAll": cell})


@pytest.mark.parametrize("split_id,train_ids", [(0, {1, 3, 5}), (3, {2, 4, 6})])
def test_grid_official_partitions(tmp_path, split_id, train_ids):
  _write_grid(tmp_path / "grid" / "underground_reid", with_mat=True)
  ds = registry.get_dataset("grid", str(tmp_path), split_id=split_id)
  assert (len(ds.train), len(ds.query), len(ds.gallery)) == (6, 3, 3 + 2)
  assert ds.num_train_pids == 3
  raw_train = {int(os.path.basename(r.path)[:4]) for r in ds.train}
  assert raw_train == train_ids
  assert ids(ds.query) == {1, 2, 3, 4, 5, 6} - train_ids
  assert ids(ds.gallery) == ({1, 2, 3, 4, 5, 6} - train_ids) | {0}  # distractors stay in gallery
  assert cams(ds.gallery) >= {1, 6}


def test_grid_without_mat_uses_seeded_rule(tmp_path):
  _write_grid(tmp_path / "underground_reid", with_mat=False)
  for k in (0, 7):
    ds = registry.get_dataset("grid", str(tmp_path), split_id=k)
    raw_train = {int(os.path.basename(r.path)[:4]) for r in ds.train}
    assert raw_train == _reference_train_ids(range(1, 7), 3, k)
    assert len(ds.query) == 3 and len(ds.gallery) == 5


# -------------------------------------------------------------------------------------------- PRID
def _write_prid(base):
  write_images(base / "cam_a", [f"person_{i:04d}.png" for i in range(1, 9)])  # 7, 8: cam_a only
  write_images(base / "cam_b", [f"person_{i:04d}.png" for i in range(1, 12)])  # 7..11 distractors


def test_prid_split_rule(tmp_path):
  _write_prid(tmp_path / "prid2011" / "prid_2011" / "single_shot")
  ds = registry.get_dataset("prid", str(tmp_path), split_id=2, paired_ids=6)
  train_ids = _reference_train_ids(range(1, 7), 3, 2)
  test_ids = set(range(1, 7)) - train_ids
  assert (len(ds.train), len(ds.query), len(ds.gallery)) == (6, 3, 3 + 5)
  assert {int(os.path.basename(r.path)[7:11]) for r in ds.train} == train_ids
  assert ids(ds.train) == {0, 1, 2} and cams(ds.train) == {0, 1}
  assert ids(ds.query) == test_ids and cams(ds.query) == {0}
  assert ids(ds.gallery) == test_ids | {7, 8, 9, 10, 11} and cams(ds.gallery) == {1}


def test_prid_missing_paired_image_names_it(tmp_path):
  _write_prid(tmp_path)
  with pytest.raises(common.LayoutError, match=r"cam_a lacks person_0009.png"):
    registry.get_dataset("prid", str(tmp_path), paired_ids=10)


# ------------------------------------------------------------------------------------------- VIPeR
def _write_viper(base):
  write_images(base / "cam_a", [f"{i:03d}_45.bmp" for i in range(6)])
  write_images(base / "cam_b", [f"{i:03d}_90.bmp" for i in range(6)])


def test_viper_split_rule_and_swapped_cameras(tmp_path):
  _write_viper(tmp_path / "VIPeR")
  ds = registry.get_dataset("viper", str(tmp_path), split_id=5)
  train_ids = _reference_train_ids(range(6), 3, 5)
  assert (len(ds.train), len(ds.query), len(ds.gallery)) == (6, 3, 3)
  assert {int(os.path.basename(r.path)[:3]) for r in ds.train} == train_ids
  assert ids(ds.query) == ids(ds.gallery) == set(range(6)) - train_ids
  assert cams(ds.query) == {0} and cams(ds.gallery) == {1}
  assert all(r.path.endswith(".bmp") for r in ds.query)
  swapped = registry.get_dataset("viper", str(tmp_path), split_id=5, query_cam="b")
  assert [r.path for r in swapped.query] == [r.path for r in ds.gallery]


def test_viper_unpaired_image(tmp_path):
  _write_viper(tmp_path)
  os.remove(tmp_path / "cam_b" / "004_90.bmp")
  with pytest.raises(common.AnnotationError, match=r"ids \[4\]"):
    registry.get_dataset("viper", str(tmp_path))


# ------------------------------------------------------------------------------------------- iLIDS
def test_ilids_split_rule(tmp_path):
  counts = {1: 2, 2: 4, 3: 3, 4: 2, 5: 2, 6: 3}
  names = [f"{p:04d}{n:03d}.jpg" for p, k in counts.items() for n in range(1, k + 1)]
  write_images(tmp_path / "QMUL-iLIDS" / "i-LIDS_Pedestrian" / "Persons", names)
  ds = registry.get_dataset("ilids", str(tmp_path), split_id=1)
  raw_train = {int(os.path.basename(r.path)[:4]) for r in ds.train}
  assert raw_train == _reference_train_ids(range(1, 7), 3, 1)
  assert len(ds.train) == sum(counts[p] for p in raw_train) and ds.num_train_pids == 3
  test_ids = set(counts) - raw_train
  assert len(ds.query) == len(ds.gallery) == 3
  assert ids(ds.query) == ids(ds.gallery) == test_ids
  assert not {r.path for r in ds.query} & {r.path for r in ds.gallery}
  assert {r.camid for r in ds.train} <= {0, 1, 2, 3}


# ------------------------------------------------------------------------------- all four targets
@pytest.mark.parametrize("reader", ["grid", "prid", "viper"])
def test_splits_deterministic_distinct_and_disjoint(tmp_path, reader):
  {"grid": lambda: _write_grid(tmp_path, with_mat=False), "prid": lambda: _write_prid(tmp_path),
   "viper": lambda: _write_viper(tmp_path)}[reader]()
  kw = {"paired_ids": 6} if reader == "prid" else {}
  train_sets = []
  for k in range(10):
    a = registry.get_dataset(reader, str(tmp_path), split_id=k, **kw)
    b = registry.get_dataset(reader, str(tmp_path), split_id=k, **kw)
    assert a == b
    train_paths = {r.path for r in a.train}
    assert not train_paths & {r.path for r in a.query + a.gallery}
    train_sets.append(frozenset(train_paths))
  assert len(set(train_sets)) > 3  # ten draws of 3 of 6 ids: a fixed split would give 1
  with pytest.raises(ValueError, match="split_id"):
    registry.get_dataset(reader, str(tmp_path), split_id=10, **kw)
