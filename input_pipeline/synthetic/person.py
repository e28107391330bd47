"""Drawing one pedestrian (no background) from its attributes, seen from a viewpoint.

Body parts are laid out in units of the person's height and drawn at 2x resolution, then
downsampled, which anti-aliases the edges the way a real camera blurs them. What is drawn depends
on the view: a logo only from the front, a backpack's body only from behind or the side (its
straps from the front), a face only from the front or side.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from input_pipeline.synthetic.attributes import COLOURS, HAIR_COLOURS, SKIN_TONES, Identity

SUPERSAMPLE = 2


def _shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
  return tuple(int(np.clip(c * factor, 0, 255)) for c in rgb)  # type: ignore[return-value]


class _Body:
  """Maps body coordinates (x in person heights from the centre line, y from head top) to px."""

  def __init__(self, cx: float, top: float, height_px: float, width: float):
    self.cx, self.top, self.h, self.w = cx, top, height_px, width

  def x(self, u: float) -> float:
    return self.cx + u * self.h

  def y(self, v: float) -> float:
    return self.top + v * self.h

  def box(self, u0: float, v0: float, u1: float, v1: float) -> list[float]:
    return [self.x(u0), self.y(v0), self.x(u1), self.y(v1)]

  def poly(self, pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(self.x(u), self.y(v)) for u, v in pts]


def _garment_fill(size: tuple[int, int], ident: Identity, view: str, b: _Body,
                  rng: np.random.Generator) -> Image.Image:
  """The upper garment's cloth: base colour plus its pattern (stripes, checks, front logo)."""
  base, pc = COLOURS[ident.upper_colour], COLOURS[ident.pattern_colour]
  cloth = Image.new("RGB", size, base)
  d = ImageDraw.Draw(cloth)
  period = max(4.0, b.h * rng.uniform(0.038, 0.046))
  if ident.upper_pattern in ("stripes", "checks"):
    y = b.y(0.16) + rng.uniform(0, period)
    while y < size[1]:
      d.rectangle([0, y, size[0], y + period * 0.45], fill=pc)
      y += period
  if ident.upper_pattern == "checks":
    x = rng.uniform(0, period)
    while x < size[0]:
      d.rectangle([x, 0, x + period * 0.45, size[1]], fill=pc)
      x += period
  if ident.upper_pattern == "logo" and view == "front":
    r = b.h * 0.04 * ident.width
    cx, cy = b.x(0.0), b.y(0.27)
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=pc)
    d.rectangle([cx - r * 0.35, cy - r * 0.35, cx + r * 0.35, cy + r * 0.35], fill=base)
  return cloth


def draw_person(ident: Identity, view: str, rng: np.random.Generator, *, size: tuple[int, int],
                height_px: float, cx: float, feet_y: float, facing_left: bool = False
                ) -> Image.Image:
  """Returns an RGBA image of `size` (W, H) with the person drawn and transparent elsewhere."""
  ss = SUPERSAMPLE
  big = (size[0] * ss, size[1] * ss)
  h = height_px * ss
  b = _Body(cx * ss, feet_y * ss - h, h, ident.width)
  img = Image.new("RGBA", big, (0, 0, 0, 0))
  d = ImageDraw.Draw(img)
  skin = SKIN_TONES[ident.skin]
  hair = HAIR_COLOURS[ident.hair_colour]
  lower = COLOURS[ident.lower_colour]
  shoes = COLOURS[ident.shoes_colour]
  bag = COLOURS[ident.bag_colour]
  acc = COLOURS[ident.accessory_colour]
  w = ident.width
  side = view == "side"
  # Torso half-widths (shoulder, hip); the side view is narrower.
  sh, hp = (0.085 * w, 0.075 * w) if side else (0.13 * w, 0.105 * w)
  if ident.gender == "woman" and not side:
    sh *= 0.92
  stride = rng.uniform(0.03, 0.07) if side else rng.uniform(0.0, 0.015)
  leg_hw = 0.043 * w
  leg_x = (-stride, stride) if side else (-0.056 * w - stride, 0.056 * w + stride)
  hem = {"trousers": 0.95, "shorts": 0.72, "skirt": 0.75}[ident.lower_type]

  # Backpack body from the side is behind the torso: draw first.
  if ident.bag == "backpack" and side:
    d.rounded_rectangle(b.box(-sh - 0.07, 0.19, -sh + 0.01, 0.45), radius=h * 0.02, fill=bag)

  # Legs: skin below the hem, garment above it; shoes at the bottom.
  for lx in leg_x:
    d.rectangle(b.box(lx - leg_hw * 0.8, 0.5, lx + leg_hw * 0.8, 0.965), fill=skin)
    if ident.lower_type != "skirt":
      d.rectangle(b.box(lx - leg_hw, 0.49, lx + leg_hw, hem), fill=lower)
    toe = 0.05 if side else 0.0
    d.ellipse(b.box(lx - leg_hw * 1.15, 0.945, lx + leg_hw * 1.15 + toe, 1.0), fill=shoes)
  if ident.lower_type == "skirt":
    d.polygon(b.poly([(-hp, 0.48), (hp, 0.48), (hp * 1.45, hem), (-hp * 1.45, hem)]), fill=lower)

  # Upper garment (torso + sleeves) filled with its pattern through a mask.
  sleeve_end = 0.47 if ident.upper_type in ("shirt", "jacket", "sweater") else 0.29
  arm_hw = 0.033 * w
  arm_x = (0.0,) if side else (-sh - arm_hw * 0.6, sh + arm_hw * 0.6)
  mask = Image.new("L", big, 0)
  md = ImageDraw.Draw(mask)
  md.polygon(b.poly([(-sh, 0.165), (sh, 0.165), (hp, 0.52), (-hp, 0.52)]), fill=255)
  for ax in arm_x:
    md.rectangle(b.box(ax - arm_hw * 1.2, 0.17, ax + arm_hw * 1.2, sleeve_end), fill=255)
  for ax in arm_x:  # bare forearms and hands
    d.rectangle(b.box(ax - arm_hw, sleeve_end - 0.01, ax + arm_hw, 0.49), fill=skin)
    d.ellipse(b.box(ax - arm_hw * 1.1, 0.47, ax + arm_hw * 1.1, 0.53), fill=skin)
  img.paste(_garment_fill(big, ident, view, b, rng), (0, 0), mask)
  # A soft fold line gives the garment some structure without changing its colour much.
  if not side:
    d.line([b.x(0), b.y(0.2), b.x(0), b.y(0.5)],
           fill=_shade(COLOURS[ident.upper_colour], 0.8), width=max(1, int(h * 0.004)))

  # Neck and head.
  d.rectangle(b.box(-0.018, 0.11, 0.018, 0.17), fill=_shade(skin, 0.92))
  head = b.box(-0.047, 0.0, 0.047, 0.135)
  d.ellipse(head, fill=skin)
  if ident.hair_style != "bald":
    if view == "back":
      d.ellipse(b.box(-0.05, -0.005, 0.05, 0.12), fill=hair)
    else:
      d.chord(b.box(-0.05, -0.008, 0.05, 0.1), 180, 360, fill=hair)
      if side:
        d.rectangle(b.box(-0.05, 0.03, -0.01, 0.1), fill=hair)
    if ident.hair_style == "long":
      if view == "front":
        for sx in (-0.046, 0.046):
          d.rectangle(b.box(sx - 0.012, 0.04, sx + 0.012, 0.21), fill=hair)
      elif view == "back":
        d.rectangle(b.box(-0.055, 0.04, 0.055, 0.25), fill=hair)
      else:
        d.rectangle(b.box(-0.055, 0.04, -0.01, 0.2), fill=hair)
    elif ident.hair_style == "ponytail" and view != "front":
      px = -0.055 if side else 0.0
      d.ellipse(b.box(px - 0.02, 0.07, px + 0.02, 0.2), fill=hair)
  if view == "front":
    for ex in (-0.018, 0.018):
      d.ellipse(b.box(ex - 0.006, 0.06, ex + 0.006, 0.072), fill=(40, 30, 30))
  elif side:
    d.ellipse(b.box(0.024, 0.06, 0.034, 0.072), fill=(40, 30, 30))

  # Accessories.
  if ident.accessory == "cap":
    d.chord(b.box(-0.052, -0.015, 0.052, 0.07), 180, 360, fill=acc)
    if view != "back":
      brim = b.box(-0.03, 0.022, 0.09, 0.038) if side else b.box(-0.06, 0.022, 0.06, 0.04)
      d.rectangle(brim, fill=_shade(acc, 0.8))
  elif ident.accessory == "beanie":
    d.chord(b.box(-0.053, -0.02, 0.053, 0.095), 180, 360, fill=acc)
    d.rectangle(b.box(-0.053, 0.03, 0.053, 0.048), fill=_shade(acc, 0.85))
  elif ident.accessory == "glasses" and view != "back":
    gx = (0.029,) if side else (-0.018, 0.018)
    for ex in gx:
      d.rectangle(b.box(ex - 0.014, 0.058, ex + 0.014, 0.076), outline=(20, 20, 20),
                  width=max(1, int(h * 0.005)))
  elif ident.accessory == "scarf":
    d.rectangle(b.box(-0.06, 0.13, 0.06, 0.185), fill=acc)
    if view == "front":
      d.rectangle(b.box(0.015, 0.15, 0.045, 0.3), fill=acc)

  # Bags in front of the body.
  strap = max(2, int(h * 0.012))
  if ident.bag == "backpack":
    if view == "back":
      d.rounded_rectangle(b.box(-sh * 0.85, 0.19, sh * 0.85, 0.46), radius=h * 0.02, fill=bag)
      d.rectangle(b.box(-sh * 0.6, 0.36, sh * 0.6, 0.44), fill=_shade(bag, 0.75))
    elif view == "front":
      for sx in (-1, 1):
        d.line([b.x(sx * sh * 0.6), b.y(0.165), b.x(sx * sh * 0.55), b.y(0.4)], fill=bag,
               width=strap)
    else:
      d.line([b.x(-0.01), b.y(0.17), b.x(0.02), b.y(0.38)], fill=bag, width=strap)
  elif ident.bag == "shoulder bag":
    d.line([b.x(-sh * 0.7), b.y(0.165), b.x(sh * 0.9), b.y(0.45)], fill=bag, width=strap)
    d.rectangle(b.box(sh * 0.55, 0.42, sh * 0.55 + 0.085, 0.53), fill=bag)
  elif ident.bag == "handbag":
    hx = arm_x[-1]
    d.rectangle(b.box(hx - 0.04, 0.5, hx + 0.04, 0.6), fill=bag)
    d.arc(b.box(hx - 0.025, 0.46, hx + 0.025, 0.54), 180, 360, fill=bag, width=strap)

  small = img.resize(size, Image.Resampling.BOX)
  return small.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if facing_left else small
