"""TensorFlow image ops for Re-ID: decode, resize, augment, normalise.

Every random op is stateless and takes an explicit seed (int [2]), so a run is reproducible for a
seed whatever the tf.data parallelism. Images are float32 HWC; augmentations before `normalize`
work in [0, 255], random erasing works on the normalised image (as torchreid, where
RandomErasing follows Normalize), so "mean" fill means the dataset mean colour (0 after
normalisation).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from retext_jax import errors

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ERASE_FILLS = ("mean", "random")


def decode(data: tf.Tensor) -> tf.Tensor:
  """Encoded JPEG/PNG/BMP/GIF bytes -> uint8 [H, W, 3] (first frame of animations)."""
  img = tf.io.decode_image(data, channels=3, expand_animations=False)
  img.set_shape([None, None, 3])
  return img


def resize(img: tf.Tensor, size: Sequence[int]) -> tf.Tensor:
  """Bilinear resize (antialiased, like PIL) to `size` = (height, width); float32 in [0, 255]."""
  out = tf.image.resize(tf.cast(img, tf.float32), size, method="bilinear", antialias=True)
  return tf.clip_by_value(out, 0.0, 255.0)


def random_flip(img: tf.Tensor, seed: tf.Tensor, prob: float = 0.5) -> tf.Tensor:
  """Horizontal mirror with probability `prob`."""
  do = tf.random.stateless_uniform([], seed) < prob
  return tf.cond(do, lambda: tf.reverse(img, axis=[1]), lambda: img)


def pad_and_crop(img: tf.Tensor, seed: tf.Tensor, pad: int = 10) -> tf.Tensor:
  """Zero-pads `pad` pixels on each side and crops a random window of the original size."""
  if pad <= 0:
    return img
  h, w = tf.shape(img)[0], tf.shape(img)[1]
  padded = tf.pad(img, [[pad, pad], [pad, pad], [0, 0]])
  off = tf.random.stateless_uniform([2], seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32)
  out = tf.slice(padded, [off[0], off[1], 0], [h, w, -1])
  out.set_shape(img.shape)
  return out


def color_jitter(img: tf.Tensor, seed: tf.Tensor, brightness: float = 0.0,
                 contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0) -> tf.Tensor:
  """torchvision-style ColorJitter on a [0, 255] image (factors as in torchvision; 0 = off)."""
  seeds = tf.random.experimental.stateless_split(seed, 4)
  x = img / 255.0
  if brightness > 0:
    factor = tf.random.stateless_uniform([], seeds[0], 1 - brightness, 1 + brightness)
    x = x * factor
  if contrast > 0:
    factor = tf.random.stateless_uniform([], seeds[1], 1 - contrast, 1 + contrast)
    gray_mean = tf.reduce_mean(tf.image.rgb_to_grayscale(tf.clip_by_value(x, 0.0, 1.0)))
    x = (x - gray_mean) * factor + gray_mean
  if saturation > 0:
    factor = tf.random.stateless_uniform([], seeds[2], 1 - saturation, 1 + saturation)
    gray = tf.image.rgb_to_grayscale(tf.clip_by_value(x, 0.0, 1.0))
    x = (x - gray) * factor + gray
  if hue > 0:
    delta = tf.random.stateless_uniform([], seeds[3], -hue, hue)
    x = tf.image.adjust_hue(tf.clip_by_value(x, 0.0, 1.0), delta)
  return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def camera_response(img: tf.Tensor, seed: tf.Tensor, strength: float) -> tf.Tensor:
  """A random camera response on a [0, 255] image: per-channel gain (colour cast) times an
  exposure gain, both U(1 - s, 1 + s), then gamma exp(U(-s, s)) and contrast U(1 - s, 1 + s)
  about mid-grey. What another camera network's sensors and lighting do to the same person;
  unlike torchvision's ColorJitter it tints channels independently. `strength` s = 0: off."""
  if strength <= 0:
    return img
  seeds = tf.random.experimental.stateless_split(seed, 4)
  s = strength
  gain = (tf.random.stateless_uniform([3], seeds[0], 1 - s, 1 + s)
          * tf.random.stateless_uniform([], seeds[1], 1 - s, 1 + s))
  x = tf.clip_by_value(img / 255.0 * gain, 0.0, 1.0)
  x = x ** tf.exp(tf.random.stateless_uniform([], seeds[2], -s, s))
  x = (x - 0.5) * tf.random.stateless_uniform([], seeds[3], 1 - s, 1 + s) + 0.5
  return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def normalize(img: tf.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> tf.Tensor:
  """[0, 255] -> (x / 255 - mean) / std per channel."""
  return (img / 255.0 - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def erase_box(height: int, width: int, seed: tf.Tensor, area: Sequence[float] = (0.02, 0.4),
              aspect: Sequence[float] = (0.3, 3.33), attempts: int = 10) -> tf.Tensor:
  """Random erasing rectangle (Zhong et al. 2020): int32 [4] = (top, left, h, w); h = w = 0 if
  none of `attempts` draws fits (the paper retries up to 100 times; 10 fit >99% of the time at
  Re-ID shapes). Target area ~ U(area) * H * W, aspect ratio h/w ~ U(aspect)."""
  seeds = tf.random.experimental.stateless_split(seed, 4)
  total = float(height * width)
  target = tf.random.stateless_uniform([attempts], seeds[0], area[0], area[1]) * total
  ratio = tf.random.stateless_uniform([attempts], seeds[1], aspect[0], aspect[1])
  hs = tf.cast(tf.round(tf.sqrt(target * ratio)), tf.int32)
  ws = tf.cast(tf.round(tf.sqrt(target / ratio)), tf.int32)
  fits = (hs < height) & (ws < width) & (hs > 0) & (ws > 0)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  any_fit = tf.reduce_any(fits)
  h = tf.where(any_fit, hs[first], 0)
  w = tf.where(any_fit, ws[first], 0)
  u = tf.random.stateless_uniform([2], seeds[2])
  top = tf.cast(tf.floor(u[0] * tf.cast(height - h + 1, tf.float32)), tf.int32)
  left = tf.cast(tf.floor(u[1] * tf.cast(width - w + 1, tf.float32)), tf.int32)
  return tf.stack([tf.minimum(top, height - h), tf.minimum(left, width - w), h, w])


def random_erase(img: tf.Tensor, seed: tf.Tensor, prob: float = 0.5,
                 area: Sequence[float] = (0.02, 0.4), aspect: Sequence[float] = (0.3, 3.33),
                 fill: str = "mean") -> tf.Tensor:
  """Random erasing on a normalised image [H, W, C] with static H, W.

  fill="mean" writes 0 (the normalisation mean colour), "random" writes N(0, 1) noise per pixel
  (timm's "pixel" mode, used by TransReID).
  """
  if fill not in ERASE_FILLS:
    raise errors.ConfigError(f"erase fill must be one of {ERASE_FILLS}, got {fill!r}")
  if prob <= 0:
    return img
  height, width = img.shape[0], img.shape[1]
  if height is None or width is None:
    raise ValueError("random_erase needs a static image size: resize first")
  seeds = tf.random.experimental.stateless_split(seed, 3)
  top, left, h, w = tf.unstack(erase_box(height, width, seeds[0], area, aspect))
  h = tf.where(tf.random.stateless_uniform([], seeds[1]) < prob, h, 0)
  rows = tf.range(height)[:, None]
  cols = tf.range(width)[None, :]
  inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
  if fill == "mean":
    value = tf.zeros_like(img)
  else:
    value = tf.random.stateless_normal(tf.shape(img), seeds[2], dtype=img.dtype)
  return tf.where(inside[:, :, None], value, img)
