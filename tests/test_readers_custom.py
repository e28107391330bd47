"""The custom list-file reader: CSV and JSON, relative paths, relabelling, merging, bad rows."""

import os

import pytest
from reader_utils import write_image, write_json, write_text

from input_pipeline import registry
from input_pipeline.readers import common

CSV = """path,pid,camid,split,caption
train/0001_a.jpg,1,0,train,a man in a red jacket
train/0001_a.jpg,1,0,train,a man with a black backpack
train/0001_b.jpg,1,1,train,
train/0042_a.png,42,-1,train,a woman in jeans
probe/0007.png,7,0,query,
gallery/0007.png,7,1,gallery,
gallery/0000_junk.png,0,2,gallery,
text/0009.bmp,9,-1,test,"a child, holding a kite"
"""


def _write_images_for(base, text):
  for line in text.splitlines()[1:]:
    write_image(os.path.join(base, line.split(",")[0]))


def test_custom_csv(tmp_path):
  _write_images_for(tmp_path, CSV)
  write_text(str(tmp_path / "annotations.csv"), CSV)
  ds = registry.get_dataset("custom", str(tmp_path))
  assert (len(ds.train), len(ds.query), len(ds.gallery), len(ds.test)) == (3, 1, 2, 1)
  by_name = {os.path.basename(r.path): r for r in ds.train}
  assert by_name["0001_a.jpg"].captions == ("a man in a red jacket", "a man with a black backpack")
  assert by_name["0001_b.jpg"].captions == ()
  assert (by_name["0001_a.jpg"].pid, by_name["0042_a.png"].pid) == (0, 1)  # 1 -> 0, 42 -> 1
  assert by_name["0042_a.png"].camid == -1
  assert [(r.pid, r.camid) for r in ds.gallery] == [(7, 1), (0, 2)]  # raw ids
  assert ds.test[0].captions == ("a child, holding a kite",)
  assert all(os.path.isabs(r.path) and os.path.isfile(r.path) for r in ds.train + ds.test)
  assert {r.dataset for r in ds.train + ds.query} == {"custom"}
  assert common.skipped(ds) == {}


def test_custom_json_and_list_file_as_root(tmp_path):
  entries = [
      {"path": "imgs/a.jpg", "pid": 5, "camid": 0, "split": "train",
       "captions": ["first", "second"]},
      {"path": "imgs/b.jpg", "pid": 3, "camid": 1, "split": "train", "caption": "third"},
      {"path": "imgs/c.jpg", "pid": 3, "camid": 1, "split": "train"},
      {"path": "imgs/q.jpg", "pid": 8, "camid": 0, "split": "query"},
  ]
  for e in entries:
    write_image(str(tmp_path / "data" / e["path"]))
  write_json(str(tmp_path / "data" / "my_list.json"), entries)
  list_file = str(tmp_path / "data" / "my_list.json")
  ds = registry.get_dataset("custom", list_file, dataset_name="shop_cams")
  assert [(r.pid, r.captions) for r in ds.train] == [
      (1, ("first", "second")), (0, ("third",)), (0, ())]
  assert ds.query[0].pid == 8 and {r.dataset for r in ds.train} == {"shop_cams"}
  same = registry.get_dataset("custom", str(tmp_path / "data"), annotations="my_list.json",
                              dataset_name="shop_cams")
  assert same == ds
  strict = registry.get_dataset("custom", str(tmp_path / "data" / "my_list.json"),
                                require_captions=True)
  assert len(strict.train) == 2 and len(strict.query) == 0
  assert common.skipped(strict) == {"image without captions": 2}


@pytest.mark.parametrize(
    "text,match",
    [("path,pid,split\na.jpg,1,train\n", r"missing \['camid'\]"),
     ("path,pid,camid,split,cam\na.jpg,1,0,train,3\n", r"unknown \['cam'\]"),
     ("path,pid,camid,split\na.jpg,1,0,train\nb.jpg,x,0,train\n", r"line 3: pid must be an int"),
     ("path,pid,camid,split\na.jpg,1,0,training\n", r"line 2: split must be one of"),
     ("path,pid,camid,split\na.jpg,1,0\n", r"line 2: expected 4 comma-separated fields"),
     ("path,pid,camid,split\na.jpg,1,0,train\na.jpg,2,0,train\n", r"listed again"),
     ("path,pid,camid,split\na.jpg,1,-3,train\n", r"camid must be >= -1"),
     ("path,pid,camid,split\na.jpg,1,0,train\n../a.jpg,1,0,train\n",
      r"line 3: path '../a.jpg' leaves the list file's folder")],
)
def test_custom_bad_rows_name_file_and_line(tmp_path, text, match):
  write_image(str(tmp_path / "a.jpg"))
  write_image(str(tmp_path / "b.jpg"))
  write_text(str(tmp_path / "annotations.csv"), text)
  with pytest.raises(common.AnnotationError, match=match) as e:
    registry.get_dataset("custom", str(tmp_path))
  assert str(tmp_path / "annotations.csv") in str(e.value)


def test_an_image_listed_twice_in_a_split_is_an_error_naming_it():
  # What every reader returns goes through make_dataset: one file is one record per split.
  from input_pipeline.records import Record

  a, b = Record("/d/a.jpg", 1, 0, "train"), Record("/d/b.jpg", 2, 0, "train")
  assert len(common.make_dataset("d", "/d", train=[a, b], query=[a]).train) == 2
  with pytest.raises(common.AnnotationError, match="1 image.s. of the train split are listed more "
                                                   "than once; first: /d/a.jpg twice under"):
    common.make_dataset("d", "/d", train=[a, b, a])
  with pytest.raises(common.AnnotationError, match="under identities 1 and 2"):
    common.make_dataset("d", "/d", gallery=[a, Record("/d/a.jpg", 2, 1, "gallery")])


def test_custom_missing_image_and_missing_list(tmp_path):
  write_text(str(tmp_path / "annotations.csv"), "path,pid,camid,split\nnot_there.jpg,1,0,train\n")
  with pytest.raises(FileNotFoundError, match=r"not_there.jpg listed in .*annotations.csv line 2"):
    registry.get_dataset("custom", str(tmp_path))
  os.remove(tmp_path / "annotations.csv")
  with pytest.raises(common.LayoutError, match=r"annotations.csv, .*annotations.json"):
    registry.get_dataset("custom", str(tmp_path))


def test_custom_json_unknown_field(tmp_path):
  write_image(str(tmp_path / "a.jpg"))
  write_json(str(tmp_path / "annotations.json"),
             [{"path": "a.jpg", "pid": 1, "camid": 0, "split": "train", "cameraid": 2}])
  with pytest.raises(common.AnnotationError, match=r"entry #0 has unknown fields \['cameraid'\]"):
    registry.get_dataset("custom", str(tmp_path))
