"""Writes tiny real image files (JPEG/PNG/BMP bytes through PIL) in a dataset's real layout."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from PIL import Image

_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}


def write_image(path: str, size: tuple[int, int] = (4, 8), value: int = 128) -> str:
  """A 4x8 (w x h) RGB image, encoded in the format its extension names."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fmt = _FORMATS[os.path.splitext(path)[1].lower()]
  Image.new("RGB", size, (value, 255 - value, 64)).save(path, format=fmt)
  return path


def write_images(folder: str, names: Iterable[str]) -> list[str]:
  return [write_image(os.path.join(folder, n), value=i % 256) for i, n in enumerate(names)]


def write_json(path: str, obj) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1)
  return path


def write_text(path: str, text: str) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  return path


def ids(records) -> set[int]:
  return {r.pid for r in records}


def cams(records) -> set[int]:
  return {r.camid for r in records}
