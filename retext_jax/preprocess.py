"""What users have -> what the model reads: file paths, PIL images or pixel arrays of any size
become the evaluation pipeline's resized, normalised float32 batch, without TensorFlow.

The evaluation pipeline (`input_pipeline.eval_pipeline`) decodes to RGB, resizes with
`tf.image.resize(bilinear, antialias=True)` to `config.input.image_size`, clips to [0, 255] and
normalises with the config's mean and std. `jax.image.resize(..., "bilinear", antialias=True)`
is the same algorithm (half-pixel centres, a triangle kernel widened when shrinking), so
features computed from either agree to float rounding (tests/test_inference_api.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from retext_jax import errors

# One image: a file path, a PIL image, or pixels [H, W, 3] (or [H, W]) in 0..255.
ImageLike = str | os.PathLike | Image.Image | np.ndarray


def decode_file(path: str, where: str = "image") -> np.ndarray:
  """uint8 [H, W, 3] of an image file, decoded by the evaluation pipeline's own decoder
  (TensorFlow's, imported here on first use): JPEG decoders differ by a few levels (TensorFlow's
  default DCT is the fast integer one, PIL's the accurate one), so a path gives exactly the
  pixels `tools.extract` sees. Without TensorFlow, PIL decodes."""
  if not os.path.isfile(path):
    raise errors.MissingFileError(f"{where}: image file {path} does not exist")
  try:
    from retext_jax import tf_setup

    tf_setup.data_only()
    from input_pipeline import augment
  except ImportError:
    augment = None
  try:
    if augment is None:
      with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
    import tensorflow as tf

    return augment.decode(tf.io.read_file(path)).numpy()
  except Exception as e:  # noqa: BLE001 - any decoder failure is a file the user gave
    raise errors.DataError(f"{where}: {path} cannot be read as an image "
                           f"({type(e).__name__})") from None


def to_pixels(image: ImageLike, where: str = "image") -> np.ndarray:
  """[H, W, 3] pixels in 0..255 (uint8 as decoded, float as given) of one image."""
  if isinstance(image, (str, os.PathLike)):
    return decode_file(os.fspath(image), where)
  if isinstance(image, Image.Image):
    return np.asarray(image.convert("RGB"))
  pixels = np.asarray(image)
  if pixels.ndim == 2:
    pixels = np.repeat(pixels[..., None], 3, axis=-1)
  if pixels.ndim != 3 or pixels.shape[-1] not in (3, 4):
    raise errors.DataError(f"{where}: expected pixels [H, W, 3] (RGB), got shape {pixels.shape}")
  return pixels[..., :3]


def _checked_range(pixels: np.ndarray, where: str) -> np.ndarray:
  pixels = np.asarray(pixels)
  if pixels.dtype.kind not in "uif":
    raise errors.DataError(f"{where}: pixels must be numbers, got dtype {pixels.dtype}")
  if pixels.dtype.kind == "f" and pixels.size and (pixels.min() < 0 or pixels.max() > 255):
    raise errors.DataError(
        f"{where}: pixel values must be in 0..255 (got {pixels.min():.3g}..{pixels.max():.3g}); "
        "arrays that are already resized and normalised go to image_features_normalized")
  return pixels.astype(np.float32)


def resize(pixels: np.ndarray, size: Sequence[int]) -> np.ndarray:
  """[..., H, W, 3] float32 in 0..255 -> [..., h, w, 3] as the evaluation pipeline resizes."""
  h, w = int(size[0]), int(size[1])
  if pixels.shape[-3:-1] == (h, w):
    return pixels
  out = jax.image.resize(jnp.asarray(pixels), (*pixels.shape[:-3], h, w, 3), "bilinear",
                         antialias=True)
  return np.clip(np.asarray(out), 0.0, 255.0)


def normalize(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """0..255 -> (x / 255 - mean) / std per RGB channel."""
  return ((pixels / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
          ).astype(np.float32)


def prepare(images: Any, size: Sequence[int], mean: Sequence[float], std: Sequence[float]
            ) -> np.ndarray:
  """The model's input batch [B, h, w, 3] from `images`: a sequence of paths, PIL images or
  [H, W, 3] arrays (sizes may differ), a single such image, or one array [B, H, W, 3]; pixel
  values in 0..255 (uint8 or float)."""
  if isinstance(images, np.ndarray) and images.ndim == 4:
    batch = resize(_checked_range(images, "images"), size)
  else:
    if isinstance(images, (str, os.PathLike, Image.Image)) or (
        isinstance(images, np.ndarray) and images.ndim in (2, 3)):
      images = [images]
    images = list(images)
    if not images:
      raise errors.DataError("images: nothing to embed (an empty list)")
    batch = np.stack([resize(_checked_range(to_pixels(im, f"images[{i}]"), f"images[{i}]"), size)
                      for i, im in enumerate(images)])
  return normalize(batch, mean, std)
