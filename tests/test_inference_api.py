"""The Python API takes images as users have them: paths, PIL images, uint8 or float pixels of
any size, and gives the features `tools.extract` computes through the TensorFlow pipeline."""

import numpy as np
import pytest
from PIL import Image

from input_pipeline import registry
from retext_jax import errors, inference, preprocess
from retext_jax.tools import common, extract


@pytest.fixture(scope="module")
def model_and_reference(trained_workdir, tmp_path_factory):
  """The trained tiny model and 6 gallery images, as the benchmark's JPEG files and as PNG
  copies, each folder with the features tools.extract writes for it."""
  workdir, root = trained_workdir
  gallery = registry.get_dataset("market1501", f"{root}/target_market").gallery[:6]
  base = tmp_path_factory.mktemp("api_images")
  out = {}
  for kind in ("jpg", "png"):  # a folder of exactly these files (extract --images reads one)
    folder = base / kind
    folder.mkdir()
    for r in gallery:
      name = folder / r.path.rsplit("/", 1)[-1].replace(".jpg", f".{kind}")
      if kind == "jpg":
        name.write_bytes(open(r.path, "rb").read())
      else:  # lossless: every decoder gives the same pixels
        Image.open(r.path).convert("RGB").save(name)
    features = str(base / f"{kind}.safetensors")
    assert extract.main(["--workdir", workdir, "--images", str(folder), "--out", features]) == 0
    ref = common.load_features(features)
    out[kind] = (ref["paths"], ref["features"])
  return inference.load(workdir), out


def test_every_kind_of_raw_input_gives_extracts_features(model_and_reference):
  model, ref = model_and_reference
  jpg_paths, jpg_reference = ref["jpg"]
  np.testing.assert_allclose(model.image_features(jpg_paths), jpg_reference, atol=1e-5)
  paths, reference = ref["png"]
  size = Image.open(paths[0]).size
  assert size != model.image_size[::-1]  # the files are larger: resizing is exercised
  pil = [Image.open(p) for p in paths]
  uint8 = [np.asarray(im.convert("RGB")) for im in pil]
  inputs = {"paths": paths, "PIL images": pil, "uint8 arrays": uint8,
            "float arrays in 0..255": [a.astype(np.float32) for a in uint8],
            "one uint8 batch [B, H, W, 3]": np.stack(uint8)}
  for what, images in inputs.items():
    np.testing.assert_allclose(model.image_features(images), reference, atol=1e-5, err_msg=what)
  np.testing.assert_allclose(model.image_features(paths[0])[0], reference[0], atol=1e-5)


def test_jax_resize_is_the_pipelines_tf_resize(model_and_reference):
  """The antialiased bilinear resize without TensorFlow equals tf.image.resize's."""
  import tensorflow as tf

  from input_pipeline import augment

  paths = model_and_reference[1]["png"][0]
  pixels = np.asarray(Image.open(paths[0]).convert("RGB"))
  for size in ((64, 32), (300, 150), (128, 64)):
    want = augment.resize(tf.constant(pixels), size).numpy()
    got = preprocess.resize(pixels.astype(np.float32), size)
    np.testing.assert_allclose(got, want, atol=2e-3, err_msg=str(size))


def test_normalised_arrays_go_to_the_explicit_name(model_and_reference):
  model, ref = model_and_reference
  paths, reference = ref["png"]
  prepared = model.prepare(paths)
  assert prepared.shape == (len(paths), *model.image_size, 3)
  np.testing.assert_allclose(model.image_features_normalized(prepared), reference, atol=1e-5)
  with pytest.raises(errors.DataError, match="image_features_normalized"):
    model.image_features(prepared)  # negative values: already normalised
  with pytest.raises(errors.DataError, match="any size"):
    model.image_features_normalized(np.zeros((2, 10, 10, 3), np.float32))
  with pytest.raises(errors.MissingFileError, match="nope.jpg"):
    model.image_features(["nope.jpg"])
