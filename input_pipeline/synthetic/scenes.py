"""Backgrounds and occluders: where the pedestrians stand and what hides them.

Each scene style is a small procedural generator. Domains use disjoint styles (the source domain
is streets and plazas, the target domain campuses and indoor halls), so a model that learned the
source backgrounds meets unseen ones in the target domain.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from input_pipeline.synthetic.attributes import COLOURS, sample_identity
from input_pipeline.synthetic.person import draw_person

SCENE_STYLES = ("street", "plaza", "campus", "indoor", "park", "station")
DOMAIN_SCENES: dict[str, tuple[str, ...]] = {
    "source": ("street", "plaza"),
    "target": ("campus", "indoor"),
    "synthpedes": SCENE_STYLES,
    "cuhkpedes": ("street", "indoor", "station"),
}
BG_WIDTH = 448  # a panorama: each shot of a camera sees a different part of it


def _rgb(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int, int]:
  return tuple(int(v) for v in rng.integers(lo, hi, size=3))  # type: ignore[return-value]


def _tint(base: tuple[int, int, int], rng: np.random.Generator, amount: int = 25
          ) -> tuple[int, int, int]:
  return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in base)  # type: ignore[return-value]


def _street(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
  wall = _tint([(150, 80, 60), (170, 160, 140), (120, 120, 125), (190, 170, 130)][
      rng.integers(4)], rng)
  horizon = int(h * rng.uniform(0.55, 0.68))
  d.rectangle([0, 0, w, horizon], fill=wall)
  for x in range(int(rng.integers(2, 10)), w, int(rng.integers(28, 44))):
    for y in range(int(rng.integers(6, 20)), horizon - 40, int(rng.integers(36, 52))):
      d.rectangle([x, y, x + 18, y + 24], fill=_tint((60, 70, 85), rng, 15))
  d.rectangle([0, horizon - 34, w, horizon - 26], fill=_rgb(rng, 40, 220))
  d.rectangle([0, horizon, w, h], fill=_tint((150, 146, 140), rng))
  for x in range(0, w, 24):
    d.line([x, horizon, x - 30, h], fill=_tint((120, 118, 112), rng, 8))


def _plaza(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
  horizon = int(h * rng.uniform(0.4, 0.55))
  sky = _tint((150, 190, 225), rng)
  d.rectangle([0, 0, w, horizon], fill=sky)
  x = 0
  while x < w:
    bw, bh = int(rng.integers(20, 50)), int(rng.integers(30, horizon))
    d.rectangle([x, horizon - bh, x + bw, horizon], fill=_rgb(rng, 90, 200))
    x += bw
  tile = _tint((196, 186, 168), rng)
  d.rectangle([0, horizon, w, h], fill=tile)
  step = int(rng.integers(14, 24))
  for y in range(horizon, h, step):
    d.line([0, y, w, y], fill=_tint(tile, rng, 30))


def _campus(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
  horizon = int(h * rng.uniform(0.45, 0.6))
  d.rectangle([0, 0, w, horizon], fill=_tint((200, 210, 200), rng))
  for _ in range(int(rng.integers(3, 7))):
    cx, r = rng.integers(0, w), rng.integers(18, 40)
    cy = horizon - rng.integers(5, 40)
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_tint((50, 110, 50), rng, 30))
  d.rectangle([0, horizon, w, h], fill=_tint((90, 150, 70), rng, 20))
  path = _tint((170, 140, 110), rng)
  d.polygon([(w * 0.2, horizon), (w * 0.8, horizon), (w * 1.1, h), (-w * 0.1, h)], fill=path)


def _indoor(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
  horizon = int(h * rng.uniform(0.5, 0.62))
  d.rectangle([0, 0, w, horizon], fill=_tint((215, 205, 180), rng))
  for x in range(int(rng.integers(0, 30)), w, int(rng.integers(40, 70))):
    d.rectangle([x, 0, x + 12, horizon], fill=_tint((170, 160, 150), rng, 15))
  for x in range(10, w, 50):
    d.rectangle([x, 8, x + 30, 14], fill=(250, 250, 240))
  a, bcol = _tint((180, 180, 175), rng), _tint((90, 95, 100), rng)
  s = int(rng.integers(14, 22))
  for y in range(horizon, h, s):
    for x in range(0, w, s):
      d.rectangle([x, y, x + s, y + s], fill=a if ((x + y) // s) % 2 else bcol)


def _park(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
  horizon = int(h * rng.uniform(0.35, 0.5))
  d.rectangle([0, 0, w, horizon], fill=_tint((170, 200, 235), rng))
  d.rectangle([0, horizon, w, h], fill=_tint((110, 160, 80), rng, 30))
  for _ in range(int(rng.integers(2, 5))):
    x = int(rng.integers(0, w))
    d.rectangle([x, horizon - 50, x + 6, horizon + 10], fill=(90, 60, 40))
    d.ellipse([x - 22, horizon - 90, x + 28, horizon - 40], fill=_tint((40, 120, 50), rng, 30))


def _station(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
  horizon = int(h * rng.uniform(0.55, 0.65))
  d.rectangle([0, 0, w, horizon], fill=_tint((90, 95, 110), rng))
  d.rectangle([0, int(horizon * 0.3), w, int(horizon * 0.5)], fill=_rgb(rng, 30, 250))
  d.rectangle([0, horizon, w, h], fill=_tint((70, 70, 70), rng))
  d.rectangle([0, horizon + 12, w, horizon + 18], fill=(220, 200, 40))


_GENERATORS = {"street": _street, "plaza": _plaza, "campus": _campus, "indoor": _indoor,
               "park": _park, "station": _station}


def make_background(style: str, rng: np.random.Generator, height: int = 256) -> Image.Image:
  """A BG_WIDTH × height RGB scene with mild sensor-like texture."""
  if style not in _GENERATORS:
    raise KeyError(f"unknown scene style {style!r}; expected one of {SCENE_STYLES}")
  img = Image.new("RGB", (BG_WIDTH, height))
  _GENERATORS[style](ImageDraw.Draw(img), rng, BG_WIDTH, height)
  arr = np.asarray(img, dtype=np.float32)
  # Surveillance footage is washed out: pull the scene towards its own grey level.
  grey = arr.mean(axis=2, keepdims=True)
  arr = 0.55 * arr + 0.45 * (0.7 * grey + 0.3 * grey.mean())
  arr += rng.normal(0, 6, size=(height, BG_WIDTH, 1)).astype(np.float32)
  return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


OCCLUDERS = ("pole", "object", "passerby")


def draw_occluder(img: Image.Image, kind: str, rng: np.random.Generator, domain: str) -> None:
  """Draws an occluder in front of the person, in place."""
  w, h = img.size
  d = ImageDraw.Draw(img)
  if kind == "pole":
    x = int(rng.integers(8, w - 20))
    pw = int(rng.integers(5, 13))
    d.rectangle([x, 0, x + pw, h], fill=_rgb(rng, 50, 140))
  elif kind == "object":
    top = int(h * rng.uniform(0.7, 0.85))
    x0 = int(rng.integers(-40, w // 2))
    colour = COLOURS[list(COLOURS)[int(rng.integers(len(COLOURS)))]]
    d.rounded_rectangle([x0, top, x0 + int(rng.integers(50, 110)), h + 10], radius=8,
                        fill=_tint(colour, rng, 20))
  elif kind == "passerby":
    other = sample_identity(rng, domain, key="passerby")
    side = 1 if rng.random() < 0.5 else -1
    layer = draw_person(other, ["front", "back", "side"][int(rng.integers(3))], rng,
                        size=(w, h), height_px=h * rng.uniform(0.85, 1.0),
                        cx=w / 2 + side * w * rng.uniform(0.55, 0.7), feet_y=h * 0.99)
    img.paste(layer, (0, 0), layer)
  else:
    raise KeyError(f"unknown occluder {kind!r}; expected one of {OCCLUDERS}")
