"""Config → datasets, tokenizer and iterators (the only place the trainer touches input_pipeline).

Resolves dataset roots (relative to `data.root`, or to the synthetic benchmark folder, which is
rendered on first use), reads every source through the registry, gives multi-camera sources
disjoint id ranges (one classifier over all of them), and builds the tf.data iterators.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping

from absl import logging

from input_pipeline import registry
from input_pipeline.records import Record, ReIDDataset, disjoint_ids
from retext_jax import errors
from retext_jax.methods.base import MULTICAM, MULTICAM_TEXT, SINGLECAM, DataInfo


@dataclasses.dataclass
class Sources:
  multicam: list[tuple[list[Record], float]]
  singlecam: list[tuple[list[Record], float]]
  num_classes: int
  num_sc_classes: int
  num_cameras: int
  targets: dict[str, ReIDDataset]

  @property
  def info(self) -> DataInfo:
    images = [r for recs, _ in self.multicam for r in recs]
    captioned = sum(bool(r.captions) for r in images) / max(len(images), 1)
    return DataInfo(self.num_classes, self.num_sc_classes, self.num_cameras, captioned)

  def check_streams(self, method: str, streams: tuple[str, ...]) -> None:
    """Before anything is built: the streams the method reads must be in the data."""
    if SINGLECAM in streams and not self.num_sc_classes:
      raise errors.ConfigError(
          f"the {method} method with this config reads captioned single-camera images, but "
          "config.data.sources has none (a source with part='singlecam' and captions)")
    if MULTICAM_TEXT in streams:
      bare = [r.path for recs, _ in self.multicam for r in recs if not r.captions]
      if bare:
        total = sum(len(recs) for recs, _ in self.multicam)
        raise errors.DataError(
            f"the {method} method reads a caption with every multi-camera training image, but "
            f"{len(bare)} of {total} have none (e.g. {bare[0]}); caption them with python -m "
            "retext_jax.tools.caption or add captions to the dataset's list")


def data_root(config) -> str:
  """The folder dataset roots are relative to; renders the synthetic benchmark if asked."""
  if not config.data.synthetic_preset:
    return os.path.expanduser(config.data.root)
  from input_pipeline.synthetic import ensure_benchmark

  cache = config.data.cache_dir or os.path.join("~", ".cache", "retext_jax", "synthetic")
  cache = os.path.join(os.path.expanduser(cache), f"{config.data.synthetic_preset}_seed0")
  return ensure_benchmark(cache, config.data.synthetic_preset, 0)


def _read(spec: Mapping, root: str, name: str) -> ReIDDataset:
  path = spec["root"] if os.path.isabs(spec["root"]) else os.path.join(root, spec["root"])
  if not os.path.exists(path):
    raise errors.MissingFileError(
        f"dataset {name!r} (reader {spec['reader']!r}): folder {path} does not exist; "
        f"set config.data.root or config.data.sources.{name}.root"
    )
  return registry.get_dataset(spec["reader"], path, **dict(spec.get("options") or {}))


def load_sources(config) -> Sources:
  root = data_root(config)
  mc_sets, sc_sets = [], []
  for name, spec in sorted(config.data.sources.items()):
    if spec["part"] not in (MULTICAM, SINGLECAM):
      raise errors.ConfigError(f"config.data.sources.{name}.part={spec['part']!r}: expected "
                       f"{MULTICAM!r} or {SINGLECAM!r}")
    ds = _read(spec, root, name)
    logging.info("source %s (%s):\n%s", name, spec["part"], ds.summary())
    (mc_sets if spec["part"] == MULTICAM else sc_sets).append((ds, spec["weight"]))
  if not mc_sets:
    raise errors.ConfigError("config.data.sources has no multi-camera source (part='multicam')")
  multicam, num_classes = disjoint_ids(mc_sets)
  singlecam, num_sc_classes = disjoint_ids(sc_sets)
  cams = max(ds.num_train_cams for ds, _ in mc_sets)
  return Sources(multicam, singlecam, num_classes, num_sc_classes, cams,
                 load_targets(config, root))


def load_targets(config, root: str | None = None) -> dict[str, ReIDDataset]:
  """The evaluation datasets `config.data.targets` (reads no training source); `root` is
  `data_root(config)` when the caller has it already."""
  root = root or data_root(config)
  return {name: _read(spec, root, name) for name, spec in sorted(config.data.targets.items())}


def input_config(config):
  """The pipeline's InputConfig from `config.input` (+ the ViT patching and the seed)."""
  from input_pipeline.pipeline import InputConfig

  fields = {k: v for k, v in config.input.items() if k != "eval_batch"}
  patch = config.model.get("patch", 16)  # patch masks for reconstruction follow the ViT grid
  return InputConfig.from_config(
      {**fields, "patch_size": patch, "patch_stride": config.model.get("stride", patch),
       "seed": config.seed}
  )


def train_iterator(config, sources: Sources, streams: tuple[str, ...], tokenizer,
                   start_step: int = 0, undecodable_file: str | None = None):
  """This host's endless batch iterator over the method's `streams`, from `start_step` on: a
  resumed run gets exactly the batches the uninterrupted run would have had.

  A training image that passes the up-front check but fails to decode stops the pipeline at
  the batch that holds it. The iterator then decodes every training image (threads; ~0.5 ms
  each, once), skips the ones that fail by name (or raises under on_bad_image="error"), records
  them in `undecodable_file` (a resumed run leaves them out from the start, so it still follows
  the uninterrupted run) and rebuilds the pipeline at the same step without them."""
  import jax
  import tensorflow as tf

  from input_pipeline import images, pipeline

  cfg = input_config(config)
  multicam = MULTICAM in streams or MULTICAM_TEXT in streams
  parts = (sources.multicam if multicam else [], sources.singlecam if SINGLECAM in streams else [])
  excluded = set(_read_json_list(undecodable_file))

  def build(step: int):
    kept = [[([r for r in recs if r.path not in excluded], w) for recs, w in part]
            for part in parts]
    return pipeline.make_train_iterator(
        *kept, cfg, tokenizer=tokenizer, multicam_captions=MULTICAM_TEXT in streams,
        process_index=jax.process_index(), process_count=jax.process_count(), start_step=step)

  step, batches = start_step, build(start_step)
  while True:
    try:
      batch = next(batches)
    except tf.errors.InvalidArgumentError:
      records = [r for part in parts for recs, _ in part for r in recs if r.path not in excluded]
      ok = images.usable(records, level="decode", on_bad_image=cfg.on_bad_image,
                         what=f"training images (a batch failed to decode at step {step + 1})")
      bad = [r.path for r, good in zip(records, ok, strict=True) if not good]
      if not bad:  # every image decodes: the failure is something else
        raise
      excluded.update(bad)
      if undecodable_file and jax.process_index() == 0:
        with open(undecodable_file, "w") as f:
          json.dump(sorted(excluded), f, indent=0)
      batches = build(step)
      continue
    step += 1
    yield batch


def _read_json_list(path: str | None) -> list[str]:
  if not path or not os.path.exists(path):
    return []
  with open(path) as f:
    try:
      return list(json.load(f))
    except json.JSONDecodeError as e:
      raise errors.DataError(f"{path}: not the JSON list of undecodable images this project "
                             f"writes ({e}); delete it to check the images again") from None
