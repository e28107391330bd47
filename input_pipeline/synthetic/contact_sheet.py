"""A grid of rendered images (identities × cameras) for the README and for eyeballing."""

from __future__ import annotations

import os

from PIL import Image, ImageDraw

THUMB = (80, 160)
LABEL_W = 110


def make_contact_sheet(root: str, rows: list[tuple[str, list[str | None]]], path: str) -> None:
  """Writes a PNG: one row per (label, image paths relative to root), blanks for None."""
  cols = max(len(r) for _, r in rows)
  sheet = Image.new("RGB", (LABEL_W + cols * THUMB[0], 18 + len(rows) * THUMB[1]), (245, 245, 245))
  d = ImageDraw.Draw(sheet)
  for c in range(cols):
    d.text((LABEL_W + c * THUMB[0] + 4, 3), f"cam {c + 1}", fill=(0, 0, 0))
  for r, (label, paths) in enumerate(rows):
    y = 18 + r * THUMB[1]
    d.text((4, y + THUMB[1] // 2 - 6), label, fill=(0, 0, 0))
    for c, rel in enumerate(paths):
      if rel is None:
        d.rectangle([LABEL_W + c * THUMB[0] + 2, y + 2, LABEL_W + (c + 1) * THUMB[0] - 2,
                     y + THUMB[1] - 2], outline=(200, 200, 200))
        continue
      with Image.open(os.path.join(root, rel)) as im:
        sheet.paste(im.convert("RGB").resize(THUMB, Image.Resampling.BILINEAR),
                    (LABEL_W + c * THUMB[0], y))
  sheet.save(path, "PNG")
