"""Cameras: what each one sees (viewpoint, scale, scene) and how it distorts it (colour cast,
exposure, blur, resolution, noise, occlusion).

A camera is fixed for a domain and a seed, so all its shots share a scene and a colour response,
as in a real surveillance network; the target domain's cameras have stronger, different casts.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageFilter

from input_pipeline.synthetic.attributes import VIEWS
from input_pipeline.synthetic.scenes import DOMAIN_SCENES

DOMAIN_CODES = {"source": 1, "target": 2, "synthpedes": 3, "cuhkpedes": 4}


@dataclasses.dataclass(frozen=True)
class CameraSpec:
  domain: str
  index: int  # 1-based, as in Market file names
  scene: str
  scene_seed: int
  view_probs: tuple[float, float, float]  # front, back, side
  scale: tuple[float, float]  # person height as a fraction of the image height
  cast: tuple[float, float, float]  # per-channel gain
  gamma: float
  contrast: float
  blur: tuple[float, float]
  lowres: float  # >1: the sensor's effective resolution is divided by this
  noise: float
  occlusion_prob: float

  def sample_view(self, rng: np.random.Generator) -> str:
    return VIEWS[int(rng.choice(3, p=np.asarray(self.view_probs)))]


_VIEW_PRESETS = ((0.7, 0.15, 0.15), (0.15, 0.7, 0.15), (0.2, 0.2, 0.6), (0.4, 0.4, 0.2),
                 (0.5, 0.2, 0.3), (0.2, 0.5, 0.3))


def camera_specs(domain: str, num_cameras: int, seed: int) -> list[CameraSpec]:
  """The cameras of one domain. Camera c gets the viewpoint preset c mod 6 (front-facing,
  back-facing, side-on, ...) so every domain sees people from all sides."""
  if domain not in DOMAIN_CODES:
    raise KeyError(f"unknown domain {domain!r}; expected one of {sorted(DOMAIN_CODES)}")
  strong = domain == "target"
  specs = []
  for c in range(num_cameras):
    rng = np.random.default_rng([seed, DOMAIN_CODES[domain], 0xCA, c])
    scenes = DOMAIN_SCENES[domain]
    spread = 0.16 if strong else 0.08
    cast = tuple(float(v) for v in np.clip(1 + rng.uniform(-spread, spread, 3), 0.6, 1.4))
    lo = rng.uniform(0.78, 0.88)
    specs.append(CameraSpec(
        domain=domain,
        index=c + 1,
        scene=scenes[c % len(scenes)],
        scene_seed=int(rng.integers(2**31)),
        view_probs=_VIEW_PRESETS[(c + int(rng.integers(6))) % 6],
        scale=(float(lo), float(lo + rng.uniform(0.08, 0.16))),
        cast=cast,  # type: ignore[arg-type]
        gamma=float(rng.uniform(0.8, 1.25) if strong else rng.uniform(0.9, 1.1)),
        contrast=float(rng.uniform(0.7, 1.1) if strong else rng.uniform(0.85, 1.1)),
        blur=(0.0, float(rng.uniform(0.4, 1.4))),
        lowres=float(rng.choice([1.0, 1.5, 2.0, 2.5])),
        noise=float(rng.uniform(2, 8)),
        occlusion_prob=float(rng.uniform(0.15, 0.35)),
    ))
  return specs


def apply_camera(img: Image.Image, cam: CameraSpec, rng: np.random.Generator) -> Image.Image:
  """The camera's colour response, exposure, optics and sensor applied to a rendered scene."""
  w, h = img.size
  if cam.lowres > 1.0:
    small = (max(8, int(w / cam.lowres)), max(16, int(h / cam.lowres)))
    img = img.resize(small, Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.BILINEAR)
  sigma = rng.uniform(*cam.blur)
  if sigma > 0.2:
    img = img.filter(ImageFilter.GaussianBlur(sigma))
  x = np.asarray(img, dtype=np.float32) / 255.0
  gain = np.asarray(cam.cast, np.float32) * rng.uniform(0.92, 1.08, 3).astype(np.float32)
  x = x * gain * rng.uniform(0.85, 1.15)  # per-shot exposure
  x = np.clip(x, 0, 1) ** cam.gamma
  x = (x - 0.5) * cam.contrast + 0.5
  x = x * 255.0 + rng.normal(0, cam.noise, size=x.shape).astype(np.float32)
  return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))
