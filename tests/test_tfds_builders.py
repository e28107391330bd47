"""TFDS builders: build tiny datasets from a manual dir and read the shards back."""

import collections
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from reader_utils import write_image, write_images, write_json

from input_pipeline import registry, tfds_builders


def _records_key(recs, root):
  return collections.Counter(
      (os.path.relpath(r.path, root), r.pid, r.camid, r.captions) for r in recs)


def _read_back(builder, split):
  out = collections.Counter()
  for ex in tfds.as_numpy(builder.as_dataset(split=split)):
    assert ex["image"].shape == (8, 4, 3) and ex["image"].dtype == np.uint8
    captions = tuple(c.decode() for c in ex["captions"])
    out[(ex["image/filename"].decode(), int(ex["pid"]), int(ex["camid"]), captions)] += 1
  return out


def test_market_build_and_read_back(tmp_path):
  base = tmp_path / "manual" / "Market-1501-v15.09.15"
  write_images(base / "bounding_box_train",
               ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s3_015240_04.jpg"])
  write_images(base / "query", ["0001_c1s1_001051_00.jpg"])
  write_images(base / "bounding_box_test",
               ["0001_c2s1_000301_01.jpg", "0000_c1s1_000000_01.jpg", "-1_c1s1_000401_03.jpg"])
  builder = tfds_builders.build("market1501", str(tmp_path / "manual"), str(tmp_path / "tfds"))
  ds = registry.get_dataset("market1501", str(tmp_path / "manual"))
  assert set(builder.info.splits) == {"train", "query", "gallery"}
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 3, "query": 1, "gallery": 2}
  for split in ("train", "query", "gallery"):
    assert _read_back(builder, split) == _records_key(ds.split(split), ds.root)
  # The encoded bytes are the original file, not a re-encoding.
  raw = next(iter(tfds.as_numpy(builder.as_dataset(
      split="query", decoders={"image": tfds.decode.SkipDecoding()}))))
  with open(base / "query" / "0001_c1s1_001051_00.jpg", "rb") as f:
    assert raw["image"] == f.read()
  # A fresh builder on the same data_dir restores the metadata.
  again = tfds.builder("retext_reid/market1501", data_dir=str(tmp_path / "tfds"))
  assert again.info.metadata["num_train_pids"] == 2
  assert again.info.metadata["reader"] == "market1501"


def test_captioned_and_custom_config(tmp_path):
  base = tmp_path / "manual" / "CUHK-PEDES"
  entries = [
      {"split": "train", "id": 3, "file_path": "cam_a/p3.jpg", "captions": ["a man", "tall"]},
      {"split": "train", "id": 5, "file_path": "cam_b/p5.png", "captions": ["a woman", " "]},
      {"split": "test", "id": 9, "file_path": "test/p9.jpg", "captions": ["a kid"]},
      {"split": "val", "id": 10, "file_path": "val/p10.jpg", "captions": ["a dog walker"]},
  ]
  for e in entries:
    write_image(str(base / "imgs" / e["file_path"]))
  write_json(str(base / "reid_raw.json"), entries)
  config = tfds_builders.reid_config("cuhkpedes", eval_split="val")
  assert config.name == "cuhkpedes_eval_splitval"
  builder = tfds_builders.build(config, str(tmp_path / "manual"), str(tmp_path / "tfds"))
  ds = registry.get_dataset("cuhkpedes", str(tmp_path / "manual"), eval_split="val")
  assert set(builder.info.splits) == {"train", "test"}
  for split in ("train", "test"):
    assert _read_back(builder, split) == _records_key(ds.split(split), ds.root)
  assert _read_back(builder, "test") == collections.Counter({("imgs/val/p10.jpg", 10, -1,
                                                              ("a dog walker",)): 1})
  assert json.loads(builder.info.metadata["skipped"]) == {"empty caption": 1}


def test_command_line_with_reader_options(tmp_path, capsys):
  base = tmp_path / "manual" / "VIPeR"
  write_images(base / "cam_a", [f"{i:03d}_45.bmp" for i in range(4)])
  write_images(base / "cam_b", [f"{i:03d}_90.bmp" for i in range(4)])
  tfds_builders.main(["--reader=viper", "--option=split_id=4", "--option=query_cam=b",
                      f"--manual_dir={tmp_path / 'manual'}", f"--data_dir={tmp_path / 'tfds'}"])
  assert "retext_reid/viper_query_camb_split_id4/1.0.0" in capsys.readouterr().out
  builder = tfds.builder("retext_reid/viper_query_camb_split_id4", data_dir=str(tmp_path / "tfds"))
  ds = registry.get_dataset("viper", str(base), split_id=4, query_cam="b")
  assert _read_back(builder, "query") == _records_key(ds.query, ds.root)
  assert {c for (_, _, c, _) in _read_back(builder, "query")} == {1}


def test_predefined_configs_cover_every_reader():
  names = {c.name for c in tfds_builders.RetextReid.BUILDER_CONFIGS}
  assert set(registry.names()) <= names
  assert {"cuhk03_np_labeled", "market1501_combineall", "grid_split9", "ilids_split0"} <= names


def test_wrong_manual_dir_fails_with_layout_error(tmp_path):
  write_images(tmp_path / "manual" / "DukeMTMC-reID" / "bounding_box_train", ["0001_c2_f1.jpg"])
  with pytest.raises(FileNotFoundError, match=r"DukeMTMC-reID: missing query, bounding_box_test"):
    tfds_builders.build("dukemtmcreid", str(tmp_path / "manual"), str(tmp_path / "tfds"))
