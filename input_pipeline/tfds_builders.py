"""TFDS builders that turn any registered reader's output into TFRecord shards.

One builder, `retext_reid`, with one BuilderConfig per registered reader (`retext_reid/market1501`,
`retext_reid/synthpedes`, ...) plus variants that need options (`cuhk03_np_labeled`,
`market1501_combineall`, `grid_split3`, ...); any other option set is a config you make with
`reid_config(reader, **options)`. The user places the data in the manual dir (the same folder the
reader accepts: the dataset folder or its conventional parent) and builds:

    python -m input_pipeline.tfds_builders --config=market1501 \
        --manual_dir=/data/Market-1501-v15.09.15 --data_dir=~/tensorflow_datasets
    python -m input_pipeline.tfds_builders --reader=grid --option=split_id=3 ...

(`tfds build --imports=input_pipeline.tfds_builders retext_reid/market1501 --manual_dir=...` works
too where apache-beam is installed: the tfds 4.9.10 CLI imports it at start-up.)

Each example: `image` (the original encoded bytes, never re-encoded), `image/filename` (path
relative to the dataset folder), `pid`, `camid` (int64, the reader's values: relabelled train ids,
raw query/gallery/test ids, -1 = unknown camera) and `captions` (a sequence of strings, empty for
uncaptioned sets). Splits are the reader's non-empty splits: train, query, gallery, test.

How the pipeline reads the shards:

    builder = tfds.builder("retext_reid/market1501", data_dir=data_dir)
    ds = builder.as_dataset(split=tfds.split_for_jax_process("train"), shuffle_files=True,
                            decoders={"image": tfds.decode.SkipDecoding()})

`SkipDecoding` hands the pipeline the encoded bytes so it decodes and augments them itself (the
same code path as reading files through the readers); `tfds.split_for_jax_process` gives each host
its own slice in multi-host training; `builder.info.splits["train"].num_examples` and
`builder.info.metadata` (reader, options, number of train ids, skip counts) describe the set.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from input_pipeline import registry
from input_pipeline.readers import common
from input_pipeline.records import GALLERY, QUERY, TEST, TRAIN, Record
from retext_jax import errors

_SPLITS = (TRAIN, QUERY, GALLERY, TEST)


class ReIDBuilderConfig(tfds.core.BuilderConfig):
  """Which reader to run on the manual dir, and with which options."""

  def __init__(self, *, reader: str, reader_kwargs: dict[str, Any] | None = None, **kwargs):
    kwargs.setdefault("name", reader)
    kwargs.setdefault("description", f"records of reader {reader!r} with options {reader_kwargs}")
    super().__init__(**kwargs)
    self.reader = reader
    self.reader_kwargs = dict(reader_kwargs or {})


def reid_config(reader: str, name: str | None = None, **reader_kwargs) -> ReIDBuilderConfig:
  """A config for any reader/option set, e.g. `reid_config("viper", split_id=4, query_cam="b")`."""
  if name is None:
    name = "_".join([reader] + [f"{k}{v}" for k, v in sorted(reader_kwargs.items())])
  return ReIDBuilderConfig(name=name, reader=reader, reader_kwargs=reader_kwargs)


def _default_configs() -> list[ReIDBuilderConfig]:
  configs = [ReIDBuilderConfig(reader=n) for n in registry.names()]
  configs.append(reid_config("cuhk03_np", name="cuhk03_np_labeled", variant="labeled"))
  for reader in ("market1501", "cuhk03_np", "cuhk02", "msmt17", "cuhksysu"):
    configs.append(reid_config(reader, name=f"{reader}_combineall", combineall=True))
  for reader in ("grid", "prid", "viper", "ilids"):
    configs += [reid_config(reader, name=f"{reader}_split{k}", split_id=k) for k in range(10)]
  return configs


class RetextReid(tfds.core.GeneratorBasedBuilder):
  """Re-ID and captioned person datasets, read by `input_pipeline.readers` from the manual dir."""

  name = "retext_reid"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = _default_configs()
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Place the dataset in its usual folder (e.g. Market-1501-v15.09.15/ with bounding_box_train, "
      "query, bounding_box_test; or SYNTH-PEDES/ with synthpedes_dataset.json) and pass that "
      "folder, or its parent, as --manual_dir. See input_pipeline/readers for every layout."
  )

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS looks for checksum files beside the builder through importlib.resources, which fails on
    # setuptools editable installs (`pip install -e .`); this builder downloads nothing anyway.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    # DatasetInfo directly: `dataset_info_from_configs` wants README/citation files beside us.
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.builder_config.description,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "image/filename": tfds.features.Text(),
            "pid": np.int64,
            "camid": np.int64,
            "captions": tfds.features.Sequence(tfds.features.Text()),
        }),
        metadata=tfds.core.MetadataDict(),
        homepage="https://github.com/KaiyangZhou/deep-person-reid",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    ds = registry.get_dataset(cfg.reader, os.fspath(dl_manager.manual_dir), **cfg.reader_kwargs)
    self.info.metadata.update({
        "reader": cfg.reader,
        "reader_kwargs": json.dumps(cfg.reader_kwargs, sort_keys=True),
        "num_train_pids": ds.num_train_pids,
        "skipped": json.dumps(common.skipped(ds), sort_keys=True),
    })
    splits = {s: self._generate_examples(ds.split(s), ds.root) for s in _SPLITS if ds.split(s)}
    if not splits:
      raise errors.DataError(
          f"{cfg.reader}: the reader found no images under {dl_manager.manual_dir}")
    return splits

  def _generate_examples(self, records: Sequence[Record], root: str) -> Iterator[tuple[str, dict]]:
    for i, r in enumerate(records):
      rel = os.path.relpath(r.path, root)
      yield f"{i:09d}:{rel}", {
          "image": r.path,
          "image/filename": rel,
          "pid": r.pid,
          "camid": r.camid,
          "captions": list(r.captions),
      }


def build(
    config: ReIDBuilderConfig | str, manual_dir: str, data_dir: str
) -> tfds.core.DatasetBuilder:
  """Builds (or reuses) the TFRecord shards of one config; returns the prepared builder."""
  builder = RetextReid(config=config, data_dir=os.path.expanduser(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.path.expanduser(manual_dir))
  )
  return builder


def _parse_option(text: str) -> tuple[str, Any]:
  key, sep, value = text.partition("=")
  if not sep:
    raise argparse.ArgumentTypeError(f"--option must look like key=value, got {text!r}")
  try:
    return key, json.loads(value)
  except json.JSONDecodeError:
    return key, value  # a bare string such as variant=labeled


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  group = parser.add_mutually_exclusive_group(required=True)
  group.add_argument("--config", help="a predefined config name, e.g. market1501, grid_split3")
  group.add_argument("--reader", help="any registered reader, with --option key=value")
  parser.add_argument("--option", action="append", type=_parse_option, default=[])
  parser.add_argument("--manual_dir", required=True, help="where the dataset was placed")
  parser.add_argument("--data_dir", default="~/tensorflow_datasets")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO)
  config = args.config or reid_config(args.reader, **dict(args.option))
  builder = build(config, args.manual_dir, args.data_dir)
  print(builder.info.full_name, {k: v.num_examples for k, v in builder.info.splits.items()})


if __name__ == "__main__":
  main()
