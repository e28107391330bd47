"""The feature extractor exported for deployment: no Flax, no config, no checkpoint.

`export_extractor(trained, out_dir)` writes
  extractor.jax_exported   serialized `jax.export` StableHLO, weights inside, batch symbolic
  preprocessing.json       image size, mean/std, and how the pixels must be prepared
and `export_saved_model(trained, out_dir)` a TF SavedModel (jax2tf) with the same function as its
`serving_default` signature, for TF Serving and TF tooling. The function takes RGB pixels float32
[b, H, W, 3] in [0, 255], already resized to (H, W) as the evaluation pipeline does
(tf.image.resize, bilinear, no antialias), normalises them and returns the L2-normalised Re-ID
features the framework computes (`inference.image_features`). `load_extractor(out_dir)` gives
back a callable for the first format; it needs only `jax`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from retext_jax import errors

ARTIFACT = "extractor.jax_exported"
PREPROCESSING = "preprocessing.json"
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what jax.export lowers for


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
    pixels = np.asarray(pixels, np.float32)
    if pixels.ndim != 4 or pixels.shape[1:] != (h, w, 3):
      raise errors.DataError(f"exported extractor expects pixels [batch, {h}, {w}, 3], got "
                       f"{pixels.shape}; resize as {PREPROCESSING} says")
    return np.asarray(exported.call(pixels))

  return call
