"""Behaviour shared by the encoder config dataclasses (ViT, CLIP vision, BERT)."""

from __future__ import annotations

import dataclasses
from typing import Any

from retext_jax import errors


class DictConfig:
  """`to_dict` / strict `from_dict` for frozen config dataclasses (saved as JSON beside weights)."""

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise errors.ConfigError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(known)}")
    return cls(**d)


class PatchGrid:
  """Validation and the patch grid of a ViT-style config (hidden_size, num_heads, image_size,
  patch_size, stride)."""

  def __post_init__(self):
    object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
    if self.hidden_size % self.num_heads:
      raise errors.ConfigError(
        f"hidden_size {self.hidden_size} not divisible by {self.num_heads} heads"
      )
    if min(self.image_size) < self.patch_size:
      raise errors.ConfigError(
        f"image_size {self.image_size} is smaller than the patch {self.patch_size}"
      )

  @property
  def patch_stride(self) -> int:
    return self.stride or self.patch_size

  @property
  def grid(self) -> tuple[int, int]:
    """Patch grid (rows, cols): (side - patch) // stride + 1; leftover pixels are cropped."""
    return tuple((s - self.patch_size) // self.patch_stride + 1 for s in self.image_size)

  @property
  def num_patches(self) -> int:
    return self.grid[0] * self.grid[1]
