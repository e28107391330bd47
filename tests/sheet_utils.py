"""Checks a reconstruction sheet (visualize_reconstruction's picture, also written to
TensorBoard) patch by patch against the masks it was drawn with."""

from __future__ import annotations

import numpy as np

from retext_jax.tools import visualize_reconstruction as vrec


def _panel_patches(sheet, layout, sample, panel, scale, p, cols, n):
  x, y = layout.panel_origin(sample, panel)
  s = p * scale
  return [sheet[y + r * s:y + (r + 1) * s, x + c * s:x + (c + 1) * s]
          for r, c in (divmod(i, cols) for i in range(n))]


def check_reconstruction_sheet(sheet: np.ndarray, layout, masks, scale: int, p: int, cols: int,
                               n_patch: int) -> None:
  """Per sample: the masked panel is the original with exactly the masked patches grey, the
  reconstruction panel keeps the visible patches and fills the masked ones (neither grey nor
  all copies of the original)."""
  assert sheet.shape[1] == layout.size(len(masks))[0]
  assert sheet.shape[0] >= layout.size(len(masks))[1]
  grey = np.asarray(vrec.MASK_GREY, np.uint8)
  for i, mask in enumerate(masks):
    original, masked, rec = (_panel_patches(sheet, layout, i, j, scale, p, cols, n_patch)
                             for j in range(3))
    for j in range(n_patch):
      if mask[j]:
        assert (masked[j] == grey).all(), (i, j)
      else:
        assert np.array_equal(masked[j], original[j]), (i, j)
        assert np.array_equal(rec[j], original[j]), (i, j)
    hidden = np.flatnonzero(mask)
    assert not all((rec[j] == grey).all() for j in hidden), i
    assert not all(np.array_equal(rec[j], original[j]) for j in hidden), i
