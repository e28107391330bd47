"""SYNTH-PEDES, CUHK-PEDES, ICFG-PEDES and RSTPReid with their real JSON fields."""

import logging
import os

import pytest
from reader_utils import write_image, write_json

from input_pipeline import registry
from input_pipeline.readers import common


def _synth_entries():
  return [
      {"id": 7, "file_path": "Part1/7/1.jpg",
       "attributes": ["man,black hair,black shirt,pink shorts,black shoes,unknown"],
       "captions": ["A man in his mid-twenties walks.", "The man with short black hair."],
       "prompt_caption": ["A man with black hair is wearing a black shirt."]},
      {"id": 7, "file_path": "Part1/7/2.jpg", "attributes": ["man"],
       "captions": ["A man in a black shirt."], "prompt_caption": ["A man."]},
      {"id": 3, "file_path": "Part1/3/1.jpg", "attributes": ["woman"],
       "captions": ["A woman with a red bag.", "  ", "She wears jeans."],
       "prompt_caption": ["A woman."]},
      {"id": 12, "file_path": "Part2/12/1.jpg", "attributes": ["woman"],
       "captions": [""], "prompt_caption": ["A woman."]},
  ]


def _write_synth(base, file_name="synthpedes_dataset.json"):
  entries = _synth_entries()
  for e in entries:
    write_image(os.path.join(base, e["file_path"]))
  write_json(os.path.join(base, file_name), entries)


@pytest.mark.parametrize("file_name", ["synthpedes_dataset.json", "synthpedes-dataset.json"])
def test_synthpedes(tmp_path, file_name, caplog):
  _write_synth(tmp_path / "SYNTH-PEDES", file_name)
  with caplog.at_level(logging.WARNING, logger="input_pipeline.readers"):
    ds = registry.get_dataset("synthpedes", str(tmp_path))
  assert ds.root == str(tmp_path / "SYNTH-PEDES")
  assert (len(ds.train), len(ds.query), len(ds.gallery), len(ds.test)) == (3, 0, 0, 0)
  assert [(os.path.basename(os.path.dirname(r.path)), r.pid) for r in ds.train] == [
      ("7", 1), ("7", 1), ("3", 0)]  # sorted mapping 3 -> 0, 7 -> 1; id 12 had no caption
  assert {r.camid for r in ds.train} == {-1} and {r.split for r in ds.train} == {"train"}
  assert ds.train[0].captions == (
      "A man in his mid-twenties walks.", "The man with short black hair.")
  assert ds.train[2].captions == ("A woman with a red bag.", "She wears jeans.")
  assert ds.train[0].attributes == ("man,black hair,black shirt,pink shorts,black shoes,unknown",)
  assert common.skipped(ds) == {"empty caption": 2, "image without captions": 1}
  assert "skipped 1 (image without captions)" in caplog.text and "Part2/12/1.jpg" in caplog.text


def test_synthpedes_prompt_caption(tmp_path):
  _write_synth(tmp_path)
  ds = registry.get_dataset("synthpedes", str(tmp_path), use_prompt_caption=True)
  assert len(ds.train) == 4  # id 12 now has its prompt caption
  assert ds.train[1].captions == ("A man in a black shirt.", "A man.")
  assert common.skipped(ds) == {"empty caption": 2}


def _irra_entries(path_key):
  return [
      {"split": "train", "id": 1, path_key: "train_query/p1_s1.jpg",
       "captions": ["A woman in a white dress.", "She carries a bag."], "processed_tokens": [[]]},
      {"split": "train", "id": 1, path_key: "train_query/p1_s2.jpg", "captions": ["A woman."]},
      {"split": "train", "id": 4, path_key: "CUHK01/0004001.png", "captions": ["A man."]},
      {"split": "test", "id": 11, path_key: "test_query/p11_s1.jpg", "captions": ["c1", "c2"]},
      {"split": "test", "id": 12, path_key: "test_query/p12_s1.jpg", "captions": ["c3"]},
      {"split": "val", "id": 20, path_key: "val/p20_s1.jpg", "captions": ["c4"]},
  ]


def _write_irra(base, json_name, path_key):
  entries = _irra_entries(path_key)
  for e in entries:
    write_image(os.path.join(base, "imgs", e[path_key]))
  write_json(os.path.join(base, json_name), entries)


@pytest.mark.parametrize(
    "reader,folder,json_name,path_key",
    [("cuhkpedes", "CUHK-PEDES", "reid_raw.json", "file_path"),
     ("icfgpedes", "ICFG-PEDES", "ICFG-PEDES.json", "file_path"),
     ("icfgpedes", "ICFG-PEDES", "ICFG_PEDES.json", "file_path"),
     ("rstpreid", "RSTPReid", "data_captions.json", "img_path")],
)
def test_text_reid_sets(tmp_path, reader, folder, json_name, path_key):
  _write_irra(tmp_path / folder, json_name, path_key)
  ds = registry.get_dataset(reader, str(tmp_path))
  assert (len(ds.train), len(ds.query), len(ds.gallery), len(ds.test)) == (3, 0, 0, 2)
  assert [r.pid for r in ds.train] == [0, 0, 1]  # 1 -> 0, 4 -> 1
  assert [r.pid for r in ds.test] == [11, 12]  # test ids raw
  assert sum(len(r.captions) for r in ds.test) == 3
  assert all(r.path.startswith(str(tmp_path / folder / "imgs")) for r in ds.train + ds.test)
  assert {r.dataset for r in ds.train + ds.test} == {reader}
  assert {r.split for r in ds.test} == {"test"} and {r.camid for r in ds.test} == {-1}
  val = registry.get_dataset(reader, str(tmp_path / folder), eval_split="val")
  assert [r.pid for r in val.test] == [20] and len(val.train) == 3


def test_captioned_direct_layout_like_the_synthetic_benchmark(tmp_path):
  _write_irra(tmp_path / "bench" / "CUHK-PEDES", "reid_raw.json", "file_path")
  _write_synth(tmp_path / "bench" / "SYNTH-PEDES")
  assert len(registry.get_dataset("cuhkpedes", str(tmp_path / "bench")).train) == 3
  assert len(registry.get_dataset("synthpedes", str(tmp_path / "bench")).train) == 3
