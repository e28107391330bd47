"""Rendering one 256×128 image from a job: scene, person, occluder, camera; then the JPEG.

Jobs carry their own RNG seed (derived from (seed, set, identity, index)), so any worker can
render any job and the bytes on disk do not depend on the order or the number of workers.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
from PIL import Image

from input_pipeline.synthetic.attributes import Identity, sample_identity
from input_pipeline.synthetic.cameras import CameraSpec, apply_camera
from input_pipeline.synthetic.person import draw_person
from input_pipeline.synthetic.scenes import BG_WIDTH, OCCLUDERS, draw_occluder, make_background

HEIGHT, WIDTH = 256, 128
JPEG_QUALITY = 90
JPEG_SUBSAMPLING = 2  # 4:2:0, as in the real Re-ID sets

PERSON, DISTRACTOR, JUNK = "person", "distractor", "junk"


@dataclasses.dataclass(frozen=True)
class ImageJob:
  """Everything needed to render one file. `ident` is None for distractor/junk shots."""

  path: str  # relative to the benchmark root
  camera: CameraSpec
  seed: tuple[int, ...]
  kind: str = PERSON
  ident: Identity | None = None
  view: str = "front"
  facing_left: bool = False
  scene: tuple[str, int] | None = None  # overrides the camera's scene (captioned sets)


@functools.lru_cache(maxsize=64)
def _background(style: str, seed: int) -> Image.Image:
  return make_background(style, np.random.default_rng([seed, 0xB6]), HEIGHT)


def render_image(job: ImageJob) -> Image.Image:
  """Renders the job's image (RGB, WIDTH×HEIGHT)."""
  rng = np.random.default_rng(list(job.seed))
  cam = job.camera
  style, scene_seed = job.scene if job.scene is not None else (cam.scene, cam.scene_seed)
  off = int(rng.integers(0, BG_WIDTH - WIDTH + 1))
  img = _background(style, scene_seed).crop((off, 0, off + WIDTH, HEIGHT))
  if job.kind == PERSON:
    if job.ident is None:
      raise ValueError(f"person job {job.path!r} has no identity")
    _paste_person(img, job.ident, job.view, job.facing_left, cam, rng)
    if rng.random() < cam.occlusion_prob:
      draw_occluder(img, OCCLUDERS[int(rng.integers(len(OCCLUDERS)))], rng, cam.domain)
  elif job.kind == DISTRACTOR:
    # A bad detection of a passer-by: only part of someone, off-centre or far too small.
    other = sample_identity(rng, cam.domain, key="distractor")
    layer = draw_person(other, cam.sample_view(rng), rng, size=(WIDTH, HEIGHT),
                        height_px=HEIGHT * rng.uniform(0.4, 1.6), cx=WIDTH * rng.uniform(0, 1),
                        feet_y=HEIGHT * rng.uniform(0.6, 1.5))
    img.paste(layer, (0, 0), layer)
  elif job.kind == JUNK:
    # Junk boxes: background or an unrecognisable blurred fragment.
    img = img.resize((WIDTH // 8, HEIGHT // 8)).resize((WIDTH, HEIGHT))
  else:
    raise ValueError(f"unknown job kind {job.kind!r} for {job.path!r}")
  return apply_camera(img, cam, rng)


def _paste_person(img: Image.Image, ident: Identity, view: str, facing_left: bool,
                  cam: CameraSpec, rng: np.random.Generator) -> None:
  """Detector-like framing: the box is a little off in position and scale, feet sometimes cut."""
  height_px = HEIGHT * rng.uniform(*cam.scale) * ident.height
  layer = draw_person(ident, view, rng, size=(WIDTH, HEIGHT), height_px=height_px,
                      cx=WIDTH / 2 + rng.normal(0, 5), feet_y=HEIGHT * rng.uniform(0.95, 1.03),
                      facing_left=facing_left)
  img.paste(layer, (0, 0), layer)


def render_job(job: ImageJob, root: str = "") -> str:
  """Renders and writes the job's JPEG under `root` (job paths are relative); returns the path."""
  path = os.path.join(root, job.path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  render_image(job).save(path, "JPEG", quality=JPEG_QUALITY, subsampling=JPEG_SUBSAMPLING)
  return path
