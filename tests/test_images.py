"""Host-side image validation: bad files are skipped with a logged count, or raise naming them."""

import logging
import os

import pytest
from pipeline_utils import write_image

from input_pipeline import images
from input_pipeline.records import Record


def _rec(path: str) -> Record:
  return Record(path=path, pid=1, camid=0, split="train")


@pytest.fixture
def files(tmp_path):
  good = [write_image(str(tmp_path / f"good{i}.jpg"), seed=i) for i in range(3)]
  png = write_image(str(tmp_path / "good.png"), seed=7, fmt="PNG")
  bmp = write_image(str(tmp_path / "good.bmp"), seed=8, fmt="BMP")
  empty = tmp_path / "empty.jpg"
  empty.write_bytes(b"")
  data = open(good[0], "rb").read()
  truncated = tmp_path / "truncated.jpg"
  truncated.write_bytes(data[: len(data) // 2])
  garbage = tmp_path / "garbage.jpg"
  garbage.write_bytes(b"this is not an image at all" * 10)
  trailing = tmp_path / "trailing.jpg"
  trailing.write_bytes(data + b"\x00" * 200)  # bytes after EOI: still a valid JPEG
  png_data = open(png, "rb").read()
  png_cut = tmp_path / "cut.png"
  png_cut.write_bytes(png_data[: len(png_data) - 30])
  return dict(good=good + [png, bmp, str(trailing)],
              bad=[str(empty), str(truncated), str(garbage), str(png_cut)])


@pytest.mark.parametrize("level", ["header", "decode"])
def test_bad_images_are_skipped_with_a_logged_count(files, level, caplog):
  recs = [_rec(p) for p in files["good"][:2] + files["bad"] + files["good"][2:]]
  with caplog.at_level(logging.WARNING):
    kept = images.check_images(recs, level=level)
  assert [r.path for r in kept] == files["good"]
  msg = caplog.text
  assert f"skipped {len(files['bad'])} bad image(s) of {len(recs)}" in msg
  for p in files["bad"]:
    assert os.path.basename(p) in msg


def test_error_policy_names_the_file(files):
  recs = [_rec(files["good"][0]), _rec(files["bad"][1])]
  with pytest.raises(images.BadImageError, match="truncated.jpg"):
    images.check_images(recs, on_bad_image="error")


def test_missing_file_is_an_error_naming_it(files, tmp_path):
  missing = str(tmp_path / "nowhere" / "0001_c1.jpg")
  with pytest.raises(FileNotFoundError, match="nowhere/0001_c1.jpg"):
    images.check_images([_rec(files["good"][0]), _rec(missing)], level="exists")


def test_many_files_through_the_thread_pool(files, tmp_path):
  recs = [_rec(files["good"][i % 3]) for i in range(100)] + [_rec(files["bad"][0])]
  ok = images.usable(recs, level="header", num_threads=4)
  assert ok == [True] * 100 + [False]


def test_unknown_options_are_errors(files):
  with pytest.raises(ValueError, match="on_bad_image"):
    images.check_images([_rec(files["good"][0])], on_bad_image="ignore")
  with pytest.raises(ValueError, match="level"):
    images.check_images([_rec(files["good"][0])], level="paranoid")
