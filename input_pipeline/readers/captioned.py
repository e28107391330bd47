"""Captioned person datasets: SYNTH-PEDES (single-camera training text) and the text-to-image
benchmarks CUHK-PEDES, ICFG-PEDES and RSTPReid.

Each image is one record whose `captions` hold all its descriptions (IRRA expands them to one
sample per caption; the pipeline does that when it samples). Captioned sets have no camera labels:
camid is -1. Empty captions are dropped and counted, and an image left without any caption is
skipped and counted (`dataset.skipped`, plus a logged warning): a 4.7M-image set should not stop
on one blank string, but the loss is never silent.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from input_pipeline.readers import common
from input_pipeline.records import TEST, TRAIN, Record, ReIDDataset
from input_pipeline.registry import register
from retext_jax import errors

_SYNTH_FILES = ("synthpedes_dataset.json", "synthpedes-dataset.json")


@register("synthpedes")
def synthpedes(
    root: str, use_prompt_caption: bool = False, check_images: bool = True
) -> ReIDDataset:
  """SYNTH-PEDES (PLIP): 312,321 ids, 4.79M images, 2-3 captions each; everything is `train`.

  Layout: `SYNTH-PEDES/synthpedes_dataset.json` (or `synthpedes-dataset.json`), a list of
  `{"id", "file_path", "attributes", "captions", "prompt_caption"}` with `file_path` like
  `Part1/7/1.jpg` relative to the folder holding the JSON.

  Args:
    use_prompt_caption: also append the `prompt_caption` list to each image's captions.
    check_images: verify every image exists (4.7M stats on the full set; off for slow disks).
  """
  name = "synthpedes"
  layout = (f"  <root>/{' or '.join(_SYNTH_FILES)}\n  <root>/Part1..Part11/<id>/<n>.jpg\n"
            "  (root may also be the parent of SYNTH-PEDES/)")
  base = common.find_root(
      root, ("", "SYNTH-PEDES", "synthpedes", "Synth-Pedes"), (_SYNTH_FILES,), dataset=name,
      layout=layout,
  )
  ann = common.first_existing(base, _SYNTH_FILES)
  skips = common.SkipCounter(name)
  train = []
  for i, entry in enumerate(common.json_entries(ann, dataset=name)):
    kw = dict(source=ann, index=i, dataset=name)
    pid = common.int_field(entry, "id", **kw)
    rel = common.field(entry, "file_path", **kw)
    captions = common.str_list_field(entry, "captions", **kw)
    if use_prompt_caption and "prompt_caption" in entry:
      captions = captions + common.str_list_field(entry, "prompt_caption", **kw)
    attributes = common.str_list_field(entry, "attributes", **kw) if "attributes" in entry else []
    rec = _record(base, rel, pid, TRAIN, captions, ann, i, check_images, skips, name, attributes)
    if rec is not None:
      train.append(rec)
  return common.make_dataset(name, base, train=train, skipped=skips.report())


def _record(
    image_dir: str, rel, pid: int, split: str, captions: list[str], source: str, index: int,
    check_images: bool, skips: common.SkipCounter, dataset: str, attributes: Sequence[str] = (),
) -> Record | None:
  if not isinstance(rel, str) or not rel:
    raise common.AnnotationError(
        f"{dataset}: {source} entry #{index} has an invalid image path {rel!r}"
    )
  path = os.path.join(image_dir, rel)
  if check_images:
    common.check_image(path, source=f"{source} entry #{index}", dataset=dataset)
  where = f"{source} entry #{index} ({rel})"
  kept = common.clean_captions(captions, skips=skips, where=where)
  if not kept:
    skips.skip("image without captions", where)
    return None
  return Record(
      path=path, pid=pid, camid=-1, split=split, captions=kept, attributes=tuple(attributes)
  )


def _read_text_reid(
    name: str, root: str, candidates: tuple[str, ...], ann_files: tuple[str, ...], path_key: str,
    eval_split: str, check_images: bool,
) -> ReIDDataset:
  """IRRA-style annotation: a list of {split, captions, <path_key>, id}, images under `imgs/`.

  Train ids are relabelled (sorted mapping; CUHK-PEDES's 1-based ids become id-1); `eval_split`
  entries become `test` records with raw ids (text-to-image: every caption queries every test
  image); entries of the remaining split ("val") are left out.
  """
  if eval_split not in ("test", "val"):
    raise errors.ConfigError(f"{name}: eval_split must be 'test' or 'val', got {eval_split!r}")
  layout = (f"  <root>/{' or '.join(ann_files)}  (list of {{split, captions, {path_key}, id}})\n"
            f"  <root>/imgs/<{path_key}>\n  (root may also be a parent: {candidates[1]})")
  base = common.find_root(root, candidates, (ann_files, "imgs"), dataset=name, layout=layout)
  ann = common.first_existing(base, ann_files)
  image_dir = os.path.join(base, "imgs")
  skips = common.SkipCounter(name)
  train, test = [], []
  for i, entry in enumerate(common.json_entries(ann, dataset=name)):
    kw = dict(source=ann, index=i, dataset=name)
    split = common.field(entry, "split", **kw)
    if split not in ("train", "test", "val"):
      raise common.AnnotationError(
          f"{name}: {ann} entry #{i} field 'split' must be train, test or val, got {split!r}"
      )
    if split != "train" and split != eval_split:
      continue
    pid = common.int_field(entry, "id", **kw)
    rel = common.field(entry, path_key, **kw)
    captions = common.str_list_field(entry, "captions", **kw)
    target, out_split = (train, TRAIN) if split == "train" else (test, TEST)
    rec = _record(image_dir, rel, pid, out_split, captions, ann, i, check_images, skips, name)
    if rec is not None:
      target.append(rec)
  return common.make_dataset(name, base, train=train, test=test, skipped=skips.report())


@register("cuhkpedes")
def cuhkpedes(root: str, eval_split: str = "test", check_images: bool = True) -> ReIDDataset:
  """CUHK-PEDES: `reid_raw.json` + `imgs/`; 13,003 ids, 40,206 images, 2 captions each."""
  return _read_text_reid(
      "cuhkpedes", root, ("", "CUHK-PEDES", "cuhk-pedes", "CUHK_PEDES"), ("reid_raw.json",),
      "file_path", eval_split, check_images,
  )


@register("icfgpedes")
def icfgpedes(root: str, eval_split: str = "test", check_images: bool = True) -> ReIDDataset:
  """ICFG-PEDES: `ICFG-PEDES.json` (or `ICFG_PEDES.json`) + `imgs/{train,test}`; 4,102 ids."""
  return _read_text_reid(
      "icfgpedes", root, ("", "ICFG-PEDES", "ICFG_PEDES", "icfg-pedes"),
      ("ICFG-PEDES.json", "ICFG_PEDES.json"), "file_path", eval_split, check_images,
  )


@register("rstpreid")
def rstpreid(root: str, eval_split: str = "test", check_images: bool = True) -> ReIDDataset:
  """RSTPReid: `data_captions.json` (images under `imgs/`, field `img_path`); 4,101 ids."""
  return _read_text_reid(
      "rstpreid", root, ("", "RSTPReid", "rstpreid"), ("data_captions.json",), "img_path",
      eval_split, check_images,
  )
