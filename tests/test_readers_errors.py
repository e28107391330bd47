"""Bad input: every error names the offending path, file position or field."""

import os
import subprocess
import sys

import pytest
from reader_utils import write_image, write_images, write_text

from input_pipeline import registry
from input_pipeline.readers import common
from retext_jax import errors


def test_missing_root_names_path_and_layout(tmp_path):
  missing = tmp_path / "nowhere"
  with pytest.raises(common.LayoutError) as e:
    registry.get_dataset("market1501", str(missing))
  assert str(missing) in str(e.value) and "bounding_box_train" in str(e.value)


def test_missing_subfolder_lists_every_path_searched(tmp_path):
  base = tmp_path / "Market-1501-v15.09.15"
  write_images(base / "bounding_box_train", ["0002_c1s1_000451_03.jpg"])
  write_images(base / "bounding_box_test", ["0002_c2s1_000451_03.jpg"])
  with pytest.raises(common.LayoutError) as e:
    registry.get_dataset("market1501", str(tmp_path))
  msg = str(e.value)
  assert f"{base}: missing query" in msg
  assert f"{tmp_path}: missing bounding_box_train, query, bounding_box_test" in msg
  assert "Expected layout" in msg


def test_unparsable_file_name_names_the_file(tmp_path):
  write_images(tmp_path / "bounding_box_train", ["0002_c1s1_000451_03.jpg", "person7_cam1.jpg"])
  os.makedirs(tmp_path / "query", exist_ok=True)
  os.makedirs(tmp_path / "bounding_box_test", exist_ok=True)
  with pytest.raises(common.AnnotationError, match=r"person7_cam1.jpg"):
    registry.get_dataset("market1501", str(tmp_path))


def test_malformed_json_names_file_line_and_column(tmp_path):
  os.makedirs(tmp_path / "imgs")
  text = '[\n {"split": "train", "id": 1,\n  "file_path": "a.jpg" "captions": []}\n]\n'
  write_text(str(tmp_path / "reid_raw.json"), text)
  with pytest.raises(common.AnnotationError) as e:
    registry.get_dataset("cuhkpedes", str(tmp_path))
  # Column 24 is the opening quote of "captions", where the missing comma was expected.
  assert f"{tmp_path / 'reid_raw.json'} at line 3 column 24" in str(e.value)


def test_annotation_pointing_at_missing_image(tmp_path):
  write_text(str(tmp_path / "SYNTH-PEDES" / "synthpedes_dataset.json"),
             '[{"id": 1, "file_path": "Part1/1/1.jpg", "captions": ["a man"]}]')
  with pytest.raises(FileNotFoundError) as e:
    registry.get_dataset("synthpedes", str(tmp_path))
  assert str(tmp_path / "SYNTH-PEDES" / "Part1" / "1" / "1.jpg") in str(e.value)
  assert "synthpedes_dataset.json entry #0" in str(e.value)


@pytest.mark.parametrize(
    "entry,match",
    [({"id": 1, "captions": ["a"]}, r"entry #0 has no field 'file_path'"),
     ({"id": "seven", "file_path": "a.jpg", "captions": ["a"]}, r"field 'id' must be an integer"),
     ({"id": 1, "file_path": "a.jpg", "captions": [3]}, r"field 'captions' must be a list of str")],
)
def test_bad_json_fields(tmp_path, entry, match):
  import json

  write_image(str(tmp_path / "a.jpg"))
  write_text(str(tmp_path / "synthpedes-dataset.json"), json.dumps([entry]))
  with pytest.raises(common.AnnotationError, match=match) as e:
    registry.get_dataset("synthpedes", str(tmp_path))
  assert "synthpedes-dataset.json" in str(e.value)


def test_json_must_be_a_list(tmp_path):
  os.makedirs(tmp_path / "imgs")
  write_text(str(tmp_path / "data_captions.json"), '{"annotations": []}')
  with pytest.raises(common.AnnotationError, match=r"data_captions.json must hold a JSON list"):
    registry.get_dataset("rstpreid", str(tmp_path))


def test_unknown_split_value(tmp_path):
  write_image(str(tmp_path / "imgs" / "a.jpg"))
  write_text(str(tmp_path / "ICFG_PEDES.json"),
             '[{"split": "training", "id": 0, "file_path": "a.jpg", "captions": ["x"]}]')
  with pytest.raises(common.AnnotationError, match=r"entry #0 field 'split'"):
    registry.get_dataset("icfgpedes", str(tmp_path))


def test_unknown_dataset_name():
  with pytest.raises(KeyError, match="market1501"):
    registry.get_dataset("market", "/tmp")


def test_data_and_option_mistakes_are_user_errors(tmp_path):
  """What the user can fix is an `errors.UserError` (one line from the CLI); our bugs are not."""
  with pytest.raises(errors.MissingFileError) as e:
    registry.get_dataset("market1501", str(tmp_path / "nowhere"))
  assert isinstance(e.value, common.LayoutError) and isinstance(e.value, FileNotFoundError)
  write_text(str(tmp_path / "data_captions.json"), '{"annotations": []}')
  os.makedirs(tmp_path / "imgs")
  with pytest.raises(errors.DataError) as e:
    registry.get_dataset("rstpreid", str(tmp_path))
  assert isinstance(e.value, common.AnnotationError) and isinstance(e.value, ValueError)
  with pytest.raises(errors.UnknownKeyError) as e:
    registry.get_dataset("market", str(tmp_path))
  assert str(e.value).startswith("unknown dataset 'market'")  # no KeyError repr quotes
  with pytest.raises(errors.ConfigError, match="query_cam"):
    registry.get_dataset("viper", str(tmp_path), query_cam="c")
  with pytest.raises(errors.ConfigError, match="split_id"):
    registry.get_dataset("grid", str(tmp_path), split_id=10)
  # Registering a reader name twice is a bug in the code: a plain ValueError with a traceback.
  registry.names()
  with pytest.raises(ValueError, match="registered twice") as e:
    registry.register("market1501")(lambda root: None)
  assert not isinstance(e.value, errors.UserError)


def test_readers_import_without_tensorflow():
  code = ("import sys, input_pipeline.readers, input_pipeline.registry as r; r.names(); "
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; print('ok')")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "ok"
