"""Benchmark sizes. `tiny` is for tests and CI (seconds); `demo` feeds the CPU training demo."""

from __future__ import annotations

import dataclasses

from retext_jax import errors


@dataclasses.dataclass(frozen=True)
class Preset:
  """How much to render. Market-layout domains share the camera count."""

  name: str
  num_cameras: int
  source_train_ids: int
  source_test_ids: int
  target_train_ids: int
  target_test_ids: int
  train_images_per_id: int  # spread over at least two cameras
  query_cameras_per_id: int  # one query image in each of that many cameras
  gallery_images_per_id: int  # at least one in a non-query camera
  distractors: int  # pid 0000 gallery images per domain
  junk: int  # pid -1 gallery images per domain
  synth_ids: int
  synth_images_per_id: tuple[int, int]  # inclusive range
  synth_ids_per_part: int  # SYNTH-PEDES folders Part1, Part2, ...
  cuhk_ids: int
  cuhk_images_per_id: tuple[int, int]
  caption_error_rate: float = 0.1
  workers: int = 2


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny", num_cameras=6, source_train_ids=8, source_test_ids=6, target_train_ids=4,
        target_test_ids=8, train_images_per_id=4, query_cameras_per_id=2,
        gallery_images_per_id=4, distractors=3, junk=2, synth_ids=12,
        synth_images_per_id=(2, 3), synth_ids_per_part=8, cuhk_ids=10,
        cuhk_images_per_id=(2, 3), workers=1,
    ),
    "demo": Preset(
        name="demo", num_cameras=6, source_train_ids=180, source_test_ids=60,
        target_train_ids=50, target_test_ids=100, train_images_per_id=8, query_cameras_per_id=2,
        gallery_images_per_id=7, distractors=40, junk=20, synth_ids=400,
        synth_images_per_id=(2, 4), synth_ids_per_part=100, cuhk_ids=150,
        cuhk_images_per_id=(2, 3),
    ),
}


def get_preset(name: str) -> Preset:
  if name not in PRESETS:
    raise errors.UnknownKeyError(
        f"unknown synthetic preset {name!r}; expected one of {sorted(PRESETS)}")
  return PRESETS[name]
