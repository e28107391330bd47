"""Re-ID image ops against numpy references."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from input_pipeline import augment

H, W = 24, 12


def _img(seed=0):
  return np.random.default_rng(seed).uniform(0, 255, (H, W, 3)).astype(np.float32)


def _seed(i):
  return tf.constant([i, 17], tf.int64)


def test_flip_is_an_exact_mirror_or_identity():
  x = _img()
  np.testing.assert_array_equal(augment.random_flip(x, _seed(0), 1.0), x[:, ::-1])
  np.testing.assert_array_equal(augment.random_flip(x, _seed(0), 0.0), x)
  flips = [not np.array_equal(augment.random_flip(x, _seed(i), 0.5), x) for i in range(200)]
  assert 70 < sum(flips) < 130  # p = 0.5: 4 sd of Binomial(200, 0.5) is ~28


def test_pad_and_crop_is_a_shifted_window_of_the_zero_padded_image():
  x, pad = _img(1), 3
  padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
  offsets = set()
  for i in range(60):
    y = augment.pad_and_crop(tf.constant(x), _seed(i), pad).numpy()
    assert y.shape == x.shape
    match = [(r, c) for r in range(2 * pad + 1) for c in range(2 * pad + 1)
             if np.array_equal(padded[r:r + H, c:c + W], y)]
    assert match, "crop is not a window of the padded image"
    offsets.add(match[0])
  assert len(offsets) > 20  # 49 possible offsets, all reachable


def test_erase_box_respects_area_and_aspect_bounds():
  area, aspect = (0.02, 0.4), (0.3, 3.33)
  for i in range(200):
    top, left, h, w = augment.erase_box(H, W, _seed(i), area, aspect).numpy()
    if h == 0:
      continue
    assert 0 < h < H and 0 < w < W and top + h <= H and left + w <= W and top >= 0 and left >= 0
    # h = round(sqrt(a r)), w = round(sqrt(a / r)): the area is a +- rounding.
    slack = 0.5 * (H + W) + 0.25
    assert area[0] * H * W - slack <= h * w <= area[1] * H * W + slack
    assert aspect[0] * w - 0.5 * (1 + aspect[0]) <= h <= aspect[1] * w + 0.5 * (1 + aspect[1])


@pytest.mark.parametrize("fill", ["mean", "random"])
def test_random_erase_changes_exactly_one_rectangle(fill):
  x = _img(2)
  erased = 0
  for i in range(40):
    y = augment.random_erase(tf.constant(x), _seed(i), 0.5, fill=fill).numpy()
    changed = np.any(y != x, axis=-1)
    if not changed.any():
      continue
    erased += 1
    rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
    box = np.zeros_like(changed)
    box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
    region = y[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    if fill == "mean":
      assert np.array_equal(changed, box) and np.all(region == 0)
    else:
      assert changed.sum() >= 0.99 * box.sum() and np.all(~changed | box)
      if region.size > 60:
        assert 0.5 < region.std() < 1.5
  assert 8 <= erased <= 32  # p = 0.5 over 40 draws


def test_normalize_matches_the_formula():
  x = np.full((2, 2, 3), 128.0, np.float32)
  y = augment.normalize(x, augment.CLIP_MEAN, augment.CLIP_STD).numpy()
  ref = (128 / 255 - np.array(augment.CLIP_MEAN)) / np.array(augment.CLIP_STD)
  np.testing.assert_allclose(y[0, 0], ref, rtol=1e-6)


@pytest.mark.parametrize("fmt", ["PNG", "BMP"])
def test_decode_lossless_formats_exactly(fmt):
  arr = np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, fmt)
  np.testing.assert_array_equal(augment.decode(tf.constant(buf.getvalue())), arr)


def test_decode_grayscale_jpeg_gives_three_channels_and_resize_keeps_constants():
  buf = io.BytesIO()
  Image.fromarray(np.full((40, 20), 90, np.uint8), "L").save(buf, "JPEG")
  img = augment.decode(tf.constant(buf.getvalue()))
  assert img.shape == (40, 20, 3) and img.dtype == tf.uint8
  out = augment.resize(img, (H, W)).numpy()
  assert out.shape == (H, W, 3)
  np.testing.assert_allclose(out, 90.0, atol=1.0)


def test_color_jitter_brightness_scales_within_range():
  x = np.full((4, 4, 3), 100.0, np.float32)
  factors = {float(augment.color_jitter(x, _seed(i), brightness=0.2).numpy()[0, 0, 0]) / 100
             for i in range(30)}
  assert all(0.8 - 1e-5 <= f <= 1.2 + 1e-5 for f in factors) and len(factors) > 10


def test_camera_response_tints_channels_within_its_bounds():
  s = 0.2
  grey = np.full((2, 2, 3), 127.5, np.float32)
  np.testing.assert_array_equal(augment.camera_response(grey, _seed(0), 0.0), grey)
  outs = np.stack([augment.camera_response(grey, _seed(i), s).numpy()[0, 0] for i in range(300)])
  # numpy re-derivation: a channel of mid-grey becomes ((0.5 g e)^gamma - 0.5) c + 0.5 with
  # gain g, exposure e, contrast c in [1-s, 1+s] and gamma in [e^-s, e^s]; it is monotone in
  # each factor, so its range is spanned by the corners of that box.
  corners = [((min(0.5 * g * e, 1.0) ** gm) - 0.5) * c + 0.5 for g in (1 - s, 1 + s)
             for e in (1 - s, 1 + s) for gm in (np.exp(-s), np.exp(s)) for c in (1 - s, 1 + s)]
  assert 255 * min(corners) - 1e-3 <= outs.min() and outs.max() <= 255 * max(corners) + 1e-3
  assert outs.max() - outs.min() > 0.6 * 255 * (max(corners) - min(corners))  # spans the range
  # A colour cast: the channels of a grey pixel move apart (ColorJitter's brightness and
  # contrast never do that).
  assert np.median(outs.max(1) - outs.min(1)) > 5
  a = augment.camera_response(grey, _seed(3), s)
  np.testing.assert_array_equal(a, augment.camera_response(grey, _seed(3), s))


def test_ops_are_deterministic_for_a_seed():
  x = tf.constant(_img(4))
  a = augment.random_erase(augment.pad_and_crop(x, _seed(5)), _seed(6), 1.0, fill="random")
  b = augment.random_erase(augment.pad_and_crop(x, _seed(5)), _seed(6), 1.0, fill="random")
  c = augment.random_erase(augment.pad_and_crop(x, _seed(7)), _seed(6), 1.0, fill="random")
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
