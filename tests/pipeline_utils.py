"""Small real image files and records for the input pipeline tests."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from input_pipeline.records import Record

CAPTIONS = (
    "a man wearing a black jacket and blue jeans",
    "a woman in a red dress carrying a white bag",
    "a person with a green shirt and grey shorts",
    "a young man in a yellow coat with black shoes",
)


def write_image(path: str, seed: int, size: tuple[int, int] = (24, 12), fmt: str = "JPEG") -> str:
  """A random-colour image of `size` = (height, width) written to `path`."""
  rng = np.random.default_rng(seed)
  arr = rng.integers(0, 256, size=(size[0], size[1], 3), dtype=np.uint8)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(arr).save(path, fmt)
  return path


def make_records(root: str, pids: dict[int, int], *, camids: int = 2, captions: bool = False,
                 prefix: str = "img", size: tuple[int, int] = (24, 12)) -> list[Record]:
  """`pids` maps person id -> number of images; one JPEG file per record under `root`."""
  out = []
  for pid, n in sorted(pids.items()):
    for j in range(n):
      path = write_image(os.path.join(root, f"{prefix}_{pid:04d}_{j:03d}.jpg"),
                         seed=pid * 1000 + j, size=size)
      caps = (CAPTIONS[(pid + j) % 4], CAPTIONS[(pid + j + 1) % 4]) if captions else ()
      out.append(Record(path=path, pid=pid, camid=j % camids, split="train", captions=caps,
                        dataset=prefix))
  return out
