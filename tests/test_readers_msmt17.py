"""MSMT17 V1/V2 list files (and the Market-style conversion) on tiny trees with real names."""

import os

import pytest
from reader_utils import cams, ids, write_images, write_text

from input_pipeline import registry
from input_pipeline.readers import common

TRAIN = ["0000/0000_000_01_0303morning_0015_0.jpg", "0000/0000_001_05_0303morning_0036_1.jpg",
         "0002/0002_000_15_0303noon_0100_0.jpg"]
VAL = ["0001/0001_000_03_0303morning_0020_0.jpg"]
QUERY = ["0000/0000_000_02_0303afternoon_0001_0.jpg"]
GALLERY = ["0000/0000_003_07_0303afternoon_0101_1.jpg", "0005/0005_000_09_0304noon_0002_0.jpg"]


def _write_v(base, train_dir, test_dir):
  write_images(os.path.join(base, train_dir), TRAIN + VAL)
  write_images(os.path.join(base, test_dir), QUERY + GALLERY)
  lst = lambda names: "".join(f"{n} {int(n[:4])}\n" for n in names)
  write_text(os.path.join(base, "list_train.txt"), lst(TRAIN))
  write_text(os.path.join(base, "list_val.txt"), lst(VAL))
  write_text(os.path.join(base, "list_query.txt"), lst(QUERY))
  write_text(os.path.join(base, "list_gallery.txt"), lst(GALLERY))


@pytest.mark.parametrize(
    "version,train_dir,test_dir",
    [("MSMT17_V1", "train", "test"), ("MSMT17_V2", "mask_train_v2", "mask_test_v2")],
)
def test_msmt17_versions(tmp_path, version, train_dir, test_dir):
  _write_v(tmp_path / "msmt17" / version, train_dir, test_dir)
  ds = registry.get_dataset("msmt17", str(tmp_path))
  assert ds.root == str(tmp_path / "msmt17" / version)
  assert (len(ds.train), len(ds.query), len(ds.gallery)) == (3, 1, 2)
  assert sorted((r.pid, r.camid) for r in ds.train) == [(0, 0), (0, 4), (1, 14)]  # 0,2 -> 0,1
  assert ids(ds.query) == {0} and cams(ds.query) == {1}
  assert ids(ds.gallery) == {0, 5} and cams(ds.gallery) == {6, 8}
  assert all(f"/{train_dir}/" in r.path for r in ds.train)
  assert all(f"/{test_dir}/" in r.path and os.path.isfile(r.path) for r in ds.query + ds.gallery)


def test_msmt17_with_val_and_combineall(tmp_path):
  _write_v(tmp_path / "MSMT17_V1", "train", "test")
  ds = registry.get_dataset("msmt17", str(tmp_path), with_val=True)
  assert len(ds.train) == 4 and ds.num_train_pids == 3 and len(ds.query) == 1
  ds = registry.get_dataset("msmt17", str(tmp_path / "MSMT17_V1"), combineall=True)
  assert (len(ds.train), len(ds.query), len(ds.gallery)) == (7, 0, 0)
  # Train ids 0,1,2 -> 0,1,2; test ids 0,5 are different people -> 3,4.
  label = {os.path.basename(r.path)[:4] + r.path.split("/")[-3]: r.pid for r in ds.train}
  assert label["0000train"] == 0 and label["0002train"] == 2
  assert label["0000test"] == 3 and label["0005test"] == 4


def test_msmt17_market_style_conversion(tmp_path):
  base = tmp_path / "MSMT17"
  write_images(base / "bounding_box_train", ["0000_c1_0000.jpg", "0004_c15_0001.jpg"])
  write_images(base / "query", ["0000_c3_0000.jpg"])
  write_images(base / "bounding_box_test", ["0000_c12_0002.jpg"])
  ds = registry.get_dataset("msmt17", str(tmp_path))
  assert sorted((r.pid, r.camid) for r in ds.train) == [(0, 0), (1, 14)]
  assert cams(ds.gallery) == {11} and ds.train[0].dataset == "msmt17"


def test_msmt17_bad_list_line_names_file_and_line(tmp_path):
  base = tmp_path / "MSMT17_V1"
  _write_v(base, "train", "test")
  write_text(str(base / "list_query.txt"), f"{QUERY[0]} 0\n{QUERY[0]}\n")
  with pytest.raises(common.AnnotationError, match=r"list_query.txt line 2"):
    registry.get_dataset("msmt17", str(tmp_path))


def test_msmt17_listed_image_missing(tmp_path):
  base = tmp_path / "MSMT17_V2"
  _write_v(base, "mask_train_v2", "mask_test_v2")
  os.remove(base / "mask_test_v2" / GALLERY[1])
  with pytest.raises(FileNotFoundError, match=r"0005_000_09_0304noon_0002_0.jpg.*list_gallery.txt"):
    registry.get_dataset("msmt17", str(tmp_path))
  ds = registry.get_dataset("msmt17", str(tmp_path), check_images=False)
  assert len(ds.gallery) == 2


def test_msmt17_missing_test_folder(tmp_path):
  base = tmp_path / "MSMT17_V1"
  _write_v(base, "train", "elsewhere")
  with pytest.raises(common.LayoutError, match=r"MSMT17_V1 has list files but no train/test"):
    registry.get_dataset("msmt17", str(tmp_path))
