"""The feature extractor exported for deployment: no Flax, no config, no checkpoint.

`export_extractor(trained, out_dir)` writes
  extractor.jax_exported   serialized `jax.export` StableHLO, weights inside, batch symbolic
  preprocessing.json       image size, mean/std, and how the pixels must be prepared
and `export_saved_model(trained, out_dir)` a TF SavedModel (jax2tf) with the same function as its
`serving_default` signature, for TF Serving and TF tooling; `export_onnx(trained, out_dir)` an
ONNX model (jax2onnx; input `pixels`, output `features`, symbolic batch) for onnxruntime and the
runtimes that read ONNX. The function takes RGB pixels float32
[b, H, W, 3] in [0, 255], already resized to (H, W) as the evaluation pipeline does
(tf.image.resize, bilinear, antialiased), normalises them and returns the L2-normalised Re-ID
features the framework computes (`inference.image_features`). `load_extractor(out_dir)` gives
back a callable for the first format; it needs only `jax`. `load_onnx_extractor(out_dir)` runs
the ONNX one with onnxruntime; it needs only `onnxruntime` and numpy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np

from retext_jax import errors

ARTIFACT = "extractor.jax_exported"
PREPROCESSING = "preprocessing.json"
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what jax.export lowers for
ONNX_ARTIFACT = "extractor.onnx"
ONNX_OPSET = 23  # jax2onnx's default
ONNX_MIN_OPSET = 18  # older ones: jax2onnx still writes opset-18 ops (ReduceL2 with axes input)
ONNX_INPUT, ONNX_OUTPUT = "pixels", "features"
# Newer jax2onnx releases cap orbax-checkpoint below the version this project pins.
ONNX_PIP = "pip install -e '.[onnx]' (or: pip install 'jax2onnx==0.13.0' onnx onnxruntime)"


def extractor_fn(trained) -> Callable[[jax.Array], jax.Array]:
  """pixels [b, H, W, 3] in [0, 255] -> features, with the weights closed over."""
  # Un-jitted, so only the parameters the Re-ID feature reads become constants of the
  # artifact (a text tower or a decoder in `variables` is left out).
  features, variables = trained.features_fn(), trained.variables
  mean = jnp.asarray(trained.config.input.mean, jnp.float32)
  std = jnp.asarray(trained.config.input.std, jnp.float32)

  def fn(pixels):
    return features(variables, (pixels.astype(jnp.float32) / 255.0 - mean) / std)

  return fn


def export_extractor(trained, out_dir: str, platforms: tuple[str, ...] = ("cpu",)) -> str:
  """Serializes the extractor for `platforms` (e.g. ("cpu", "cuda", "tpu")); returns the path."""
  h, w = trained.image_size
  (b,) = jax.export.symbolic_shape("b")
  exported = jax.export.export(jax.jit(extractor_fn(trained)), platforms=platforms)(
      jax.ShapeDtypeStruct((b, h, w, 3), jnp.float32))
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, ARTIFACT)
  with open(path, "wb") as f:
    f.write(exported.serialize())
  _write_preprocessing(trained, out_dir, int(exported.out_avals[0].shape[-1]),
                       platforms=list(platforms))
  return path


def export_saved_model(trained, out_dir: str) -> str:
  """Writes a TF SavedModel (signature `serving_default`: pixels -> features) to `out_dir`."""
  import tensorflow as tf
  from jax.experimental import jax2tf

  h, w = trained.image_size
  converted = jax2tf.convert(extractor_fn(trained), polymorphic_shapes=["(b, ...)"],
                             with_gradient=False)
  module = tf.Module()
  module.features = tf.function(
      lambda pixels: {"features": converted(pixels)}, autograph=False,
      input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32, name="pixels")])
  tf.saved_model.save(module, out_dir,
                      signatures={"serving_default": module.features.get_concrete_function()})
  dim = module.features.get_concrete_function().structured_outputs["features"].shape[-1]
  _write_preprocessing(trained, out_dir, int(dim), format="tf_saved_model")
  return out_dir


def export_onnx(trained, out_dir: str, opset: int = ONNX_OPSET) -> str:
  """Writes `<out_dir>/extractor.onnx` (pixels -> features, batch dimension symbolic). A model
  that computes in bfloat16 is written computing in float32: onnxruntime's CPU kernels have no
  bfloat16 convolution or matmul (the parameters are float32 either way)."""
  jax2onnx, onnx = onnx_converter()
  compute_dtype = str(jnp.dtype(trained.method.dtype))
  trained = _computing_in_float32(trained)
  h, w = trained.image_size
  with _quiet_converter():
    model = jax2onnx.to_onnx(extractor_fn(trained), [("batch", h, w, 3)],
                             input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                             model_name="retext_extractor", opset=opset)
  try:  # an opset older than the ops the converter writes gives an invalid graph
    onnx.checker.check_model(model)
  except onnx.checker.ValidationError as e:
    if opset >= ONNX_OPSET:
      raise
    first = str(e).strip().splitlines()[0]
    raise errors.ConfigError(f"opset {opset}: the converted model is not valid ONNX ({first}); "
                             f"use a newer opset (default {ONNX_OPSET})") from None
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, ONNX_ARTIFACT)
  onnx.save_model(model, path)
  dim = model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value
  _write_preprocessing(trained, out_dir, int(dim), format="onnx", opset=opset,
                       input_name=ONNX_INPUT, output_name=ONNX_OUTPUT,
                       compute_dtype="float32", trained_compute_dtype=compute_dtype)
  return path


def _computing_in_float32(trained):
  """`trained` with its module rebuilt for float32 compute, as `Method.restore` builds it."""
  if trained.method.dtype == jnp.float32:
    return trained
  config = trained.config.copy_and_resolve_references()
  config.model.dtype = "float32"
  method = type(trained.method)(config, trained.method.model_config)
  return dataclasses.replace(trained, method=method, config=config)


def onnx_converter() -> tuple[ModuleType, ModuleType]:
  """(jax2onnx, onnx), imported here so the package works without them."""
  try:
    import jax2onnx
    import onnx
  except ImportError as e:
    raise errors.DependencyError(f"ONNX export needs jax2onnx and onnx ({e.name} is missing): "
                                 f"{ONNX_PIP}") from None
  return jax2onnx, onnx


@contextlib.contextmanager
def _quiet_converter() -> Iterator[None]:
  """jax2onnx prints debug lines and logs a warning per skipped plugin and per untyped
  intermediate value; none of it concerns the exported model, which `export_onnx` checks."""
  loggers = [logging.getLogger(name) for name in ("jax2onnx", "onnx_ir")]
  levels = [lg.level for lg in loggers]
  for lg in loggers:
    lg.setLevel(logging.ERROR)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    for lg, level in zip(loggers, levels, strict=True):
      lg.setLevel(level)


def _write_preprocessing(trained, out_dir: str, feature_dim: int, **extra) -> None:
  from retext_jax import inference

  prep = {**inference.preprocessing(trained.config),
          "input": "float32 [batch, H, W, 3] RGB pixels in [0, 255] after the resize; "
                   "normalisation happens inside the exported function",
          "workdir": trained.workdir, "step": trained.step, "feature_dim": feature_dim, **extra}
  with open(os.path.join(out_dir, PREPROCESSING), "w") as f:
    json.dump(prep, f, indent=2)


def load_extractor(out_dir: str) -> Callable[[np.ndarray], np.ndarray]:
  """The exported extractor: pixels [b, H, W, 3] (float or uint8, 0..255) -> features [b, D]."""
  path = os.path.join(out_dir, ARTIFACT)
  if not os.path.isfile(path):
    raise errors.MissingFileError(f"{path} does not exist (write it with "
                            "python -m retext_jax.tools.export)")
  with open(path, "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  h, w = exported.in_avals[0].shape[1:3]

  def call(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(exported.call(_checked_pixels(pixels, h, w)))

  return call


def load_onnx_extractor(out_dir: str, providers: Sequence[str] = ("CPUExecutionProvider",)
                        ) -> Callable[[np.ndarray], np.ndarray]:
  """The ONNX extractor under onnxruntime (`providers` in order of preference): pixels
  [b, H, W, 3] (float or uint8, 0..255) -> features [b, D]. Without this package:
  `onnxruntime.InferenceSession(path).run(["features"], {"pixels": pixels})[0]`."""
  path = os.path.join(out_dir, ONNX_ARTIFACT)
  if not os.path.isfile(path):
    raise errors.MissingFileError(f"{path} does not exist (write it with "
                                  "python -m retext_jax.tools.export --format onnx)")
  try:
    import onnxruntime
  except ImportError:
    raise errors.DependencyError("running the ONNX extractor needs onnxruntime: "
                                 "pip install onnxruntime") from None
  session = onnxruntime.InferenceSession(path, providers=list(providers))
  h, w = session.get_inputs()[0].shape[1:3]

  def call(pixels: np.ndarray) -> np.ndarray:
    return session.run([ONNX_OUTPUT], {ONNX_INPUT: _checked_pixels(pixels, h, w)})[0]

  return call


def _checked_pixels(pixels: np.ndarray, h: int, w: int) -> np.ndarray:
  pixels = np.asarray(pixels, np.float32)
  if pixels.ndim != 4 or pixels.shape[1:] != (h, w, 3):
    raise errors.DataError(f"exported extractor expects pixels [batch, {h}, {w}, 3], got "
                           f"{pixels.shape}; resize as {PREPROCESSING} says")
  return pixels
