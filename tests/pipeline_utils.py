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


def corrupt_jpeg_middle(src: str, dst: str) -> str:
  """A copy of a JPEG whose entropy-coded scan data is garbage in its middle half (invalid
  markers): header and end marker intact, so the default header check passes it, but neither
  PIL nor TensorFlow decodes it."""
  data = bytearray(open(src, "rb").read())
  sos = data.index(b"\xff\xda")
  start = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")
  n = len(data) - 2 - start
  lo, hi = start + n // 4, start + n // 4 + 2 * (n // 4)
  data[lo:hi] = b"\xff\x48" * (n // 4)
  with open(dst, "wb") as f:
    f.write(bytes(data))
  return dst
