"""`tools.export --format onnx`: onnxruntime runs the exported extractor and gives the framework's
features (the trained tiny ReText through the tool, on real images; the BoT ViT, the CLIP-SCGI
image tower and the IRRA / LCR²S image tower in memory, on random pixels), at several batch sizes
from one model."""

import importlib
import json
import os
import sys

import jax
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from retext_jax import errors, export, inference, methods
from retext_jax.methods import base
from retext_jax.tools import export as export_tool

TOLERANCE = 1e-4  # float32 round-off of two runtimes; the features are unit vectors


def _framework(model, pixels):
  """The framework's features of 0..255 pixels, normalised here in numpy."""
  mean, std = np.asarray(model.config.input.mean), np.asarray(model.config.input.std)
  x = ((np.asarray(pixels, np.float64) / 255.0 - mean) / std).astype(np.float32)
  return np.asarray(model.method.jitted(base.REID)(model.variables, x))


def _check_graph(out, size):
  graph = onnx.load(os.path.join(out, export.ONNX_ARTIFACT)).graph
  (inp,), (outp,) = graph.input, graph.output
  assert (inp.name, outp.name) == ("pixels", "features")
  dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
  assert isinstance(dims[0], str) and dims[1:] == [*size, 3]  # symbolic batch
  assert isinstance(outp.type.tensor_type.shape.dim[0].dim_param, str)


def test_onnx_extractor_equals_framework_features(trained_workdir, tmp_path):
  import tensorflow as tf

  from input_pipeline import pipeline, registry

  workdir, root = trained_workdir
  model = inference.load(workdir)
  out = str(tmp_path / "onnx")
  assert export_tool.main(["--workdir", workdir, "--out", out, "--format", "onnx"]) == 0
  prep = json.load(open(os.path.join(out, export.PREPROCESSING)))
  assert prep["format"] == "onnx" and prep["image_size"] == list(model.image_size)
  assert prep["feature_dim"] == model.method.model_config.vit.hidden_size
  _check_graph(out, model.image_size)
  records = registry.get_dataset("market1501", f"{root}/target_market").gallery[:7]
  framework = model.embed_records(records, "reid", batch_size=8).feats  # the eval pipeline's
  pixels = np.stack([pipeline.load_image(tf.constant(r.path), prep["image_size"]).numpy()
                     for r in records])
  extractor = export.load_onnx_extractor(out)
  for batch in (slice(0, 1), slice(0, 7), slice(2, 5)):  # one model, any batch size
    assert np.abs(extractor(pixels[batch]) - framework[batch]).max() <= TOLERANCE
  # What the tool's docstring tells users to run, without this package.
  session = ort.InferenceSession(os.path.join(out, export.ONNX_ARTIFACT),
                                 providers=["CPUExecutionProvider"])
  (raw,) = session.run(["features"], {"pixels": pixels[:3].astype(np.float32)})
  assert np.abs(raw - framework[:3]).max() <= TOLERANCE
  with pytest.raises(errors.DataError, match="expects pixels"):
    extractor(pixels[:, :10])


def _in_memory(name, **model_overrides):
  """A model of `name`'s tiny preset as a TrainedModel, every weight and batch statistic drawn at
  random: an initialised model's zero biases, unit norms and zero-mean unit-variance BatchNorm
  statistics would hide a converter that drops or swaps them (and need no compilation)."""
  config = importlib.import_module(f"configs.{name}").get_config("tiny")
  with config.unlocked():
    config.model.update(model_overrides)
  method = methods.get(name).create(config, base.DataInfo(num_classes=4, num_cameras=2)).method
  rng = np.random.default_rng(1)

  def draw(path, leaf):
    if jax.tree_util.keystr(path[-1:]) == "['var']":  # a BatchNorm variance: positive
      return rng.uniform(0.5, 2.0, leaf.shape).astype(leaf.dtype)
    return rng.normal(0.0, 0.1, leaf.shape).astype(leaf.dtype)

  state = jax.tree_util.tree_map_with_path(draw, jax.eval_shape(method.init_variables,
                                                                jax.random.key(0)))
  return inference.TrainedModel(method, method.eval_variables(state), config, 0, "in-memory")


@pytest.mark.parametrize("name, overrides", [
    ("bot", dict(depth=2)),  # the Re-ID ViT (conv stem) through the BN neck
    ("clip_scgi", dict(depth=1)),  # the CLIP image tower (patch stem, pre-LN, QuickGELU)
    ("irra", dict(depth=2)),  # the text-retrieval image tower (LCR²S's too): its embedding
])
def test_each_image_tower_exports_to_onnx(name, overrides, tmp_path):
  model = _in_memory(name, **overrides)
  out = str(tmp_path / name)
  export.export_onnx(model, out)
  _check_graph(out, model.image_size)
  extractor = export.load_onnx_extractor(out)
  rng = np.random.default_rng(0)
  for b in (1, 4):
    pixels = rng.integers(0, 256, (b, *model.image_size, 3)).astype(np.uint8)
    assert np.abs(extractor(pixels) - _framework(model, pixels)).max() <= TOLERANCE


def test_a_bfloat16_model_is_exported_computing_in_float32(tmp_path):
  """onnxruntime's CPU kernels have no bfloat16 Conv: the ONNX model is the float32 twin, whose
  features are the bfloat16 model's up to bfloat16 round-off."""
  model = _in_memory("bot", depth=2, dtype="bfloat16")
  twin = inference.TrainedModel(methods.get("bot")(_float32_config(model),
                                                    model.method.model_config),
                                model.variables, _float32_config(model), 0, "in-memory")
  out = str(tmp_path / "bf16")
  export.export_onnx(model, out)
  prep = json.load(open(os.path.join(out, export.PREPROCESSING)))
  assert (prep["compute_dtype"], prep["trained_compute_dtype"]) == ("float32", "bfloat16")
  pixels = np.random.default_rng(0).integers(0, 256, (3, *model.image_size, 3))
  got = export.load_onnx_extractor(out)(pixels)
  assert np.abs(got - _framework(twin, pixels)).max() <= TOLERANCE
  assert np.abs(got - _framework(model, pixels)).max() <= 1e-2  # bfloat16: 8 mantissa bits


def _float32_config(model):
  config = model.config.copy_and_resolve_references()
  config.model.dtype = "float32"
  return config


def test_missing_packages_and_old_opsets_are_one_error_line(tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "jax2onnx", None)  # import jax2onnx raises ImportError
  assert export_tool.main(["--workdir", str(tmp_path), "--out", str(tmp_path / "o"),
                           "--format", "onnx"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "jax2onnx is missing" in err[0] and "pip install" in err[0], err
  assert export_tool.main(["--workdir", str(tmp_path), "--out", str(tmp_path / "o"),
                           "--format", "onnx", "--opset", "17"]) == 2
  assert "opset 18 or newer" in capsys.readouterr().err
  with pytest.raises(errors.MissingFileError, match="--format onnx"):
    export.load_onnx_extractor(str(tmp_path))
  (tmp_path / export.ONNX_ARTIFACT).write_bytes(b"")
  monkeypatch.setitem(sys.modules, "onnxruntime", None)
  with pytest.raises(errors.DependencyError, match="pip install onnxruntime"):
    export.load_onnx_extractor(str(tmp_path))
