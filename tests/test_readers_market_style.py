"""Market-layout readers on tiny trees with real file names: counts, junk, distractors, relabel."""

import os

import pytest
from reader_utils import cams, ids, write_images

from input_pipeline import registry
from input_pipeline.readers import common
from retext_jax import errors

MARKET_TRAIN = [
    "0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s3_015240_04.jpg",
    "0010_c6s4_002452_02.jpg", "0010_c5s2_000101_01.jpg",
]
MARKET_QUERY = ["0001_c1s1_001051_00.jpg", "0003_c5s1_000123_00.jpg", "0003_c4s1_000201_00.jpg"]
MARKET_GALLERY = [
    "0001_c2s1_000301_01.jpg", "0003_c1s1_000151_01.jpg", "0000_c1s1_000000_01.jpg",
    "0000_c6s1_002176_05.jpg", "-1_c1s1_000401_03.jpg", "-1_c3s1_000126_05.jpg",
]


def _write_market(base):
  write_images(os.path.join(base, "bounding_box_train"), MARKET_TRAIN)
  write_images(os.path.join(base, "query"), MARKET_QUERY)
  write_images(os.path.join(base, "bounding_box_test"), MARKET_GALLERY)
  # Non-image files that ship with the real archives are ignored.
  with open(os.path.join(base, "bounding_box_test", "Thumbs.db"), "wb") as f:
    f.write(b"\0")
  return base


@pytest.fixture
def market_parent(tmp_path):
  _write_market(tmp_path / "market1501" / "Market-1501-v15.09.15")
  return tmp_path


def test_market1501_counts_junk_distractors_and_relabel(market_parent):
  ds = registry.get_dataset("market1501", str(market_parent))
  assert ds.root == str(market_parent / "market1501" / "Market-1501-v15.09.15")
  assert (len(ds.train), len(ds.query), len(ds.gallery), len(ds.test)) == (5, 3, 4, 0)
  # Sorted mapping: 2 -> 0, 7 -> 1, 10 -> 2.
  by_name = {os.path.basename(r.path): r for r in ds.train}
  assert by_name["0002_c2s1_000301_01.jpg"].pid == 0
  assert by_name["0007_c3s3_015240_04.jpg"].pid == 1
  assert by_name["0010_c6s4_002452_02.jpg"].pid == 2
  assert by_name["0010_c6s4_002452_02.jpg"].camid == 5
  assert ds.num_train_pids == 3 and cams(ds.train) == {0, 1, 2, 4, 5}
  assert ids(ds.query) == {1, 3} and cams(ds.query) == {0, 3, 4}
  assert ids(ds.gallery) == {0, 1, 3}  # distractors kept with raw id 0, junk (-1) dropped
  assert sum(r.pid == 0 for r in ds.gallery) == 2
  for split in ("train", "query", "gallery"):
    for r in ds.split(split):
      assert r.split == split and r.dataset == "market1501" and os.path.isabs(r.path)
      assert os.path.isfile(r.path)
  assert common.skipped(ds) == {}


@pytest.mark.parametrize("rel", ["", "market1501", "market1501/Market-1501-v15.09.15"])
def test_market1501_accepts_folder_or_parents(market_parent, rel):
  ds = registry.get_dataset("market1501", str(market_parent / rel))
  assert (len(ds.train), len(ds.query), len(ds.gallery)) == (5, 3, 4)


def test_market1501_direct_layout_like_the_synthetic_benchmark(tmp_path):
  _write_market(tmp_path / "domain_a")
  ds = registry.get_dataset("market1501", str(tmp_path / "domain_a"))
  assert ds.root == str(tmp_path / "domain_a")
  assert len(ds.train) == 5


def test_links_that_point_nowhere_or_loop_are_counted_and_skipped(tmp_path, caplog):
  base = _write_market(tmp_path / "domain_a")
  train = base / "bounding_box_train"
  os.symlink(train / "0099_c1s1_000001_01.jpg", train / "0011_c1s1_000001_01.jpg")  # nowhere
  os.symlink(train / "0012_c1s1_000002_01.jpg", train / "0012_c1s1_000002_01.jpg")  # a loop
  os.symlink(train / MARKET_TRAIN[0], train / "0013_c1s1_000003_01.jpg")  # a working link
  with caplog.at_level("WARNING"):
    ds = registry.get_dataset("market1501", str(base))
  assert len(ds.train) == 6  # the five files and the working link
  assert "skipped 2 image link(s) that point nowhere or loop: 0011_c1s1_000001_01.jpg, " \
      "0012_c1s1_000002_01.jpg" in caplog.text


def test_market1501_combineall_merges_everything_but_junk_and_distractors(market_parent):
  ds = registry.get_dataset("market1501", str(market_parent), combineall=True)
  assert (len(ds.train), len(ds.query), len(ds.gallery)) == (5 + 3 + 2, 0, 0)
  # Train ids (2, 7, 10) first, then the test ids (1, 3), each group in sorted order.
  label = {os.path.basename(r.path): r.pid for r in ds.train}
  assert label["0002_c1s1_000451_03.jpg"] == 0
  assert label["0010_c5s2_000101_01.jpg"] == 2
  assert label["0001_c1s1_001051_00.jpg"] == label["0001_c2s1_000301_01.jpg"] == 3
  assert label["0003_c1s1_000151_01.jpg"] == 4
  assert ds.num_train_pids == 5 and all(r.split == "train" for r in ds.train)


def test_combineall_keeps_train_and_test_identities_apart(tmp_path):
  # CUHK03-NP reuses numbers across its train and test halves only in principle; make it happen.
  base = tmp_path / "cuhk03-np" / "detected"
  write_images(base / "bounding_box_train", ["0001_c1_1.png", "0001_c2_2.png"])
  write_images(base / "query", ["0001_c1_3.png"])
  write_images(base / "bounding_box_test", ["0001_c2_4.png"])
  ds = registry.get_dataset("cuhk03_np", str(tmp_path), combineall=True)
  assert sorted(r.pid for r in ds.train) == [0, 0, 1, 1]


def test_dukemtmcreid(tmp_path):
  base = tmp_path / "dukemtmc-reid" / "DukeMTMC-reID"
  write_images(base / "bounding_box_train", ["0001_c2_f0046182.jpg", "0005_c8_f0001234.jpg"])
  write_images(base / "query", ["0011_c1_f0001000.jpg"])
  write_images(base / "bounding_box_test", ["0011_c7_f0002000.jpg", "0012_c3_f0000100.jpg"])
  ds = registry.get_dataset("dukemtmcreid", str(tmp_path))
  assert (len(ds.train), len(ds.query), len(ds.gallery)) == (2, 1, 2)
  assert sorted((r.pid, r.camid) for r in ds.train) == [(0, 1), (1, 7)]
  assert ids(ds.gallery) == {11, 12} and cams(ds.gallery) == {6, 2}
  assert {r.dataset for r in ds.train} == {"dukemtmcreid"}


@pytest.mark.parametrize("variant,counts", [("detected", (3, 1, 2)), ("labeled", (2, 1, 1))])
def test_cuhk03_np_variants(tmp_path, variant, counts):
  det = tmp_path / "cuhk03-np" / "detected"
  write_images(det / "bounding_box_train", ["0001_c1_1.png", "0001_c2_6.png", "0003_c1_1.png"])
  write_images(det / "query", ["0002_c1_1.png"])
  write_images(det / "bounding_box_test", ["0002_c2_6.png", "0004_c2_7.png"])
  lab = tmp_path / "cuhk03-np" / "labeled"
  write_images(lab / "bounding_box_train", ["0005_c1_1.png", "0006_c2_6.png"])
  write_images(lab / "query", ["0008_c1_1.png"])
  write_images(lab / "bounding_box_test", ["0008_c2_6.png"])
  ds = registry.get_dataset("cuhk03_np", str(tmp_path), variant=variant)
  assert (len(ds.train), len(ds.query), len(ds.gallery)) == counts
  assert ds.num_train_pids == 2 and cams(ds.train) == ({0, 1})
  assert all(f"/{variant}/" in r.path for r in ds.train + ds.query + ds.gallery)


def test_cuhk03_np_rejects_unknown_variant(tmp_path):
  with pytest.raises(ValueError, match="variant"):
    registry.get_dataset("cuhk03_np", str(tmp_path), variant="classic")


def test_cuhksysu_train_only_with_zero_based_cameras(tmp_path):
  base = tmp_path / "CUHK-SYSU" / "bounding_box_train"
  write_images(base, ["00017_c0_s12345.jpg", "00017_c1_s12346.jpg", "00003_c0_s1.jpg"])
  ds = registry.get_dataset("cuhksysu", str(tmp_path))
  assert (len(ds.train), len(ds.query), len(ds.gallery)) == (3, 0, 0)
  assert sorted((r.pid, r.camid) for r in ds.train) == [(0, 0), (1, 0), (1, 1)]


def test_cuhksysu_camera_outside_range_names_the_file(tmp_path):
  write_images(tmp_path / "bounding_box_train", ["00017_c2_s12345.jpg"])
  with pytest.raises(common.AnnotationError, match="00017_c2_s12345.jpg"):
    registry.get_dataset("cuhksysu", str(tmp_path))


def test_occluded_duke_reads_its_real_layout(tmp_path):
  base = tmp_path / "Occluded_Duke"
  write_images(base / "bounding_box_train", ["0001_c2_f0046182.jpg", "0001_c5_f0051341.jpg",
                                             "0003_c8_f0050112.jpg"])
  write_images(base / "query", ["0005_c2_f0046985.jpg"])
  write_images(base / "bounding_box_test", ["0005_c5_f0051781.jpg", "0007_c1_f0057592.jpg"])
  for root in (tmp_path, base):
    ds = registry.get_dataset("occluded_duke", str(root))
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (3, 1, 2)
    assert ids(ds.train) == {0, 1} and cams(ds.train) == {1, 4, 7}
    assert ids(ds.gallery) == {5, 7} and ds.query[0].camid == 1
  with pytest.raises(common.LayoutError, match="Occluded_Duke"):
    registry.get_dataset("occluded_duke", str(tmp_path / "nowhere"))


def test_captions_sidecar_attaches_to_any_reader(market_parent, caplog):
  from input_pipeline import captions_sidecar

  root = market_parent / "market1501" / "Market-1501-v15.09.15"
  captions_sidecar.write(str(root / "captions.json"), {
      "bounding_box_train/0002_c1s1_000451_03.jpg": ["a man in a red shirt", "red shirt"],
      "query/0003_c5s1_000123_00.jpg": ["a woman with a bag"],
      "query/missing.jpg": ["no such image"],
  })
  ds = registry.get_dataset("market1501", str(market_parent), captions="captions.json")
  by_name = {os.path.basename(r.path): r for r in ds.train + ds.query + ds.gallery}
  assert by_name["0002_c1s1_000451_03.jpg"].captions == ("a man in a red shirt", "red shirt")
  assert by_name["0003_c5s1_000123_00.jpg"].captions == ("a woman with a bag",)
  assert sum(bool(r.captions) for r in by_name.values()) == 2
  assert common.skipped(ds) == {"captions sidecar entries without an image": 1}
  plain = registry.get_dataset("market1501", str(market_parent))
  assert [r.path for r in plain.train] == [r.path for r in ds.train]  # same records otherwise
  (root / "bad.json").write_text('{"query/x.jpg": "not a list"}')
  with pytest.raises(errors.DataError, match="must be a list of strings"):
    registry.get_dataset("market1501", str(root), captions="bad.json")
  with pytest.raises(errors.MissingFileError, match="nope.json"):
    registry.get_dataset("market1501", str(root), captions="nope.json")
