"""What every method's config shares: the blocks, the synthetic presets' data, the protocol
table's sources, your own data (`data=DIR`, `source.NAME=...`, `target.NAME=...`) and the
`preset,key=value` argument parser.

A method config (`configs/<method>.py`) builds its `get_config(arg)` from these:

    def get_config(arg=None):
      return common.parse(arg, "configs/bot.py", PRESETS, SHORT)

where PRESETS maps preset names to functions returning a ConfigDict and SHORT maps short
override names to dotted config paths.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import ml_collections

from retext_jax import errors, protocols
from retext_jax.methods.base import MULTICAM, SINGLECAM

# Image Re-ID protocols with real sources (retext_jax/protocols.py): what `protocol=` may name.
# (The synthetic and custom protocols' data come from `data.synthetic_preset` / `data=DIR`.)
_STANDARD = [(n, p) for n, p in protocols.PROTOCOLS.items()
             if not n.startswith(("synthetic", "custom"))]
TRAINING_PROTOCOLS = tuple(n for n, p in _STANDARD if p.task == protocols.REID)
TEXT_PROTOCOLS = tuple(n for n, p in _STANDARD if p.task == protocols.TEXT)

# Short override names every method accepts (`configs/bot.py:demo,steps=300,lr=1e-3`).
SHORT = {
    "steps": "total_steps", "batch": "input.multicam_p", "k": "input.multicam_k",
    "lr": "optim.lr", "seed": "seed", "protocol": "protocol", "profile": "profile_steps",
    "data": "data.custom",
}
# Named datasets on the command line: `source.NAME=READER:ROOT[:PART]`, `target.NAME=READER:ROOT`
# (`=none` removes the preset's entry of that name).
SOURCE, TARGET = "source.", "target."
# Every method's `custom` preset: its demo recipe on your own folder (`custom,data=DIR`).
CUSTOM = "custom"


def source(reader: str, root: str, part: str, weight: float = 1.0, **options) -> dict:
  """A training source: `part` is "multicam" (Re-ID) or "singlecam" (captioned)."""
  return dict(reader=reader, root=root, part=part, weight=weight, options=options)


def target(reader: str, root: str, **options) -> dict:
  return dict(reader=reader, root=root, options=options)


def base_config(name: str, method: str) -> ml_collections.ConfigDict:
  """Run, data, input, ViT, init, optimizer, mesh and evaluation blocks (paper-scale values)."""
  c = ml_collections.ConfigDict()
  c.name = name
  c.method = method  # retext_jax.methods.<method> (or a dotted module path)
  c.seed = 0
  c.total_steps = 24_000
  c.log_every = 50
  c.eval_every = 2_000
  c.checkpoint_every = 2_000
  c.keep_checkpoints = 2
  c.profile_steps = 0  # > 0: a jax.profiler trace of that many steps in the workdir (TensorBoard)
  c.best_metric = "reid/mAP"  # "<evaluator>/<metric>"; "" disables the best checkpoint
  c.protocol = "p2_c3"

  c.data = dict(
      root="data",  # parent of the dataset folders (torchreid layout)
      cache_dir="",  # where the synthetic benchmark is rendered ("" = ~/.cache/retext_jax)
      synthetic_preset="",  # "demo" | "tiny": render and use the synthetic benchmark
      # A folder read by the `custom` reader (annotations.csv / .json with train, query and
      # gallery splits): when set (`data=DIR`), it replaces the preset's sources and targets.
      custom="",
      # name -> dict(reader, root, part=multicam|singlecam, weight, options). Roots are relative
      # to data.root (or to the synthetic folder); filled from `protocol` when left empty.
      sources={},
      targets={},
  )

  # Fields of input_pipeline.pipeline.InputConfig (batch sizes are global), plus eval_batch.
  c.input = dict(
      image_size=(256, 128),
      multicam_p=16,  # identities per multi-camera batch
      multicam_k=4,  # images per identity
      hflip_prob=0.5, pad=10, erase_prob=0.5, color_jitter=(0.0, 0.0, 0.0, 0.0),
      camera_jitter=0.0,  # random per-channel colour cast, exposure, gamma, contrast (augment.py)
      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
      image_check="header",  # "exists" | "header" | "decode": how hard to look for bad files
      on_bad_image="skip",  # or "error"
      eval_batch=128,
      prefetch=2,
  )

  c.model = dict(
      vit="base",  # tiny | small | base | large
      depth=0,  # number of blocks; 0 = the named size's (12 for tiny/small/base)
      patch=16,
      stride=16,  # < patch gives TransReID's overlapping patches
      stem="patch",  # "patch" embedding, or "conv": stacked 3x3 convolutions (from scratch only)
      drop_path=0.1,
      camera_embedding=False,  # TransReID's side-information embedding of the camera id
      dtype="float32",  # "bfloat16" on accelerators; params stay float32
  )

  c.init = dict(
      image="",  # folder written by retext_jax.tools.convert --kind vit ("" = random init)
  )

  c.loss = dict(
      label_smoothing=0.1,
      triplet_margin=0.3,
      soft_margin=False,
  )

  c.optim = dict(
      name="adamw", lr=3.5e-5, head_lr_mult=10.0, weight_decay=0.05,
      warmup_steps=1_000, clip_norm=1.0, b1=0.9, b2=0.999, end_factor=0.01,
      freeze="",  # regex of parameter paths kept fixed, e.g. "text_encoder/word_embeddings"
      lr_mults={},  # {parameter path prefix: lr multiplier}, e.g. {"text_encoder": 0.1}
  )

  c.mesh = dict(fsdp=False, num_devices=0)  # 0 = all devices
  c.eval = dict(
      features="student",  # "student" | "momentum" (the EMA copy, for methods that keep one)
      neck="after",  # Re-ID feature "after" the BNNeck (BoT) or "before" it
      max_rank=50,
      pixel_baseline=False,  # also score raw 32x16 pixels on the image Re-ID targets at the end
      # Queries per TensorBoard ranked-list picture (and images per reconstruction sheet) at
      # each evaluation during training (retext_jax/eval_images.py); 0 = no pictures.
      tb_images=4,
  )
  # retext_jax.evaluators: name -> dict(type="reid" | "text", targets=(names in data.targets;
  # empty = all), optional=False (True: skipped when the model cannot serve it), options of the
  # type). Run at step 0, every eval_every steps and at the end.
  c.evals = {"reid": dict(type="reid")}
  return c


def synthetic_demo(c: ml_collections.ConfigDict, captions: bool) -> None:
  """The demo scale on the synthetic benchmark: source_market (+ its captioned set) -> the
  unseen target_market, ViT-Ti/6 at 128x64 from scratch, 400 steps for a 2-core CPU."""
  c.total_steps = 400
  c.log_every = 25
  c.eval_every = 200
  c.checkpoint_every = 200
  c.data.synthetic_preset = "demo"
  c.data.sources = {"synthetic_source": source("market1501", "source_market", "multicam")}
  if captions:
    c.data.sources["synthetic_captions"] = source("synthpedes", "SYNTH-PEDES", "singlecam")
  c.data.targets = {"synthetic_target": target("market1501", "target_market")}
  c.input.update(image_size=(128, 64), multicam_p=8, multicam_k=4, eval_batch=64)
  c.model.update(vit="tiny", depth=6, patch=16, stride=16, drop_path=0.0)
  c.optim.update(lr=5e-4, head_lr_mult=1.0, warmup_steps=50)
  c.eval.pixel_baseline = True


def from_scratch_vit_recipe(c: ml_collections.ConfigDict) -> None:
  """What lets the demo's ViT-Ti learn from a few thousand images in 400 CPU steps (measured in
  docs/retext.md): early convolutions instead of the 16x16 patch embedding, and a random camera
  response (colour cast, exposure, gamma, contrast) per training image. For methods whose image
  tower is the config's ViT (retext, bot)."""
  c.model.stem = "conv"
  c.input.camera_jitter = 0.2


def synthetic_long(c: ml_collections.ConfigDict) -> None:
  """The demo run five times longer (2,000 steps, evaluated every 500): the Figure-1 experiment
  at a length where the losses have converged, under an hour per run on 2 CPU cores."""
  c.total_steps = 2000
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 500


def synthetic_tiny(c: ml_collections.ConfigDict) -> None:
  """A few steps on the tiny synthetic benchmark at 64x32, for tests (on top of the demo)."""
  c.total_steps = 6
  c.log_every = 2
  c.eval_every = 6
  c.checkpoint_every = 3
  c.data.synthetic_preset = "tiny"
  c.input.update(image_size=(64, 32), multicam_p=4, multicam_k=2, eval_batch=16)
  c.optim.update(warmup_steps=2)


def protocol_data(c: ml_collections.ConfigDict, captions: dict | None = None,
                  task: str = protocols.REID) -> None:
  """Fills empty `data.sources` / `data.targets` from `c.protocol`, a protocol of `task` (plus
  a captioned source). A dataset that is both source and target (supervised and text-to-image
  protocols) is read from the same folder.

  Targets with several splits are evaluated during training on split 0; evaluate_protocol
  averages all splits afterwards."""
  known = TRAINING_PROTOCOLS if task == protocols.REID else TEXT_PROTOCOLS
  if c.protocol not in known:
    raise errors.ConfigError(f"unknown protocol {c.protocol!r}; expected one of "
                             f"{', '.join(known)}")
  if c.data.sources or c.data.synthetic_preset:
    return
  proto = protocols.get(c.protocol)
  options = {"combineall": True} if proto.combineall else {}
  roots = {t.reader: t.root for t in proto.targets}
  c.data.sources = {s: source(s, roots.get(s, s), "multicam", **options) for s in proto.sources}
  if captions:
    c.data.sources.update(captions)
  c.data.targets = {t.reader: target(t.reader, t.root) for t in proto.targets}


def own_data(c: ml_collections.ConfigDict, captioned_singlecam: bool = False,
             task: str = protocols.REID) -> None:
  """`data=DIR`: the `custom`-reader folder DIR replaces the preset's sources and targets.

  Its train split is the multi-camera source; with `captioned_singlecam` (ReText) its captioned
  train images are also the captioned single-camera source (when none has a caption, the
  trainer switches the text losses off with a notice). Evaluation: query/gallery Re-ID (`task`
  REID) or text-to-image on its captioned test split (TEXT), the `custom` and `custom_t2i`
  protocols of `evaluate_protocol`."""
  root = os.path.abspath(os.path.expanduser(c.data.custom))
  c.data.custom = root
  c.data.synthetic_preset = ""
  c.data.sources = {"custom": source("custom", root, "multicam")}
  if captioned_singlecam:
    c.data.sources["custom_captions"] = source("custom", root, "singlecam",
                                               require_captions=True)
  c.data.targets = {"custom": target("custom", root)}
  evaluator = "reid" if task == protocols.REID else "t2i"
  c.evals = {evaluator: dict(type=task, targets=("custom",))}
  c.best_metric = f"{evaluator}/mAP"


def _named_dataset(c: ml_collections.ConfigDict, key: str, value: str) -> None:
  """`source.NAME=READER:ROOT[:PART]` or `target.NAME=READER:ROOT` adds (or replaces) a named
  dataset; `=none` removes the preset's. A new target joins the `reid` evaluator when that
  evaluator names its targets; a removed one leaves every evaluator (an evaluator left with no
  target is dropped)."""
  kind, name = key.split(".", 1)
  table = c.data.sources if kind == "source" else c.data.targets
  if not name or "." in name:
    raise errors.ConfigError(f"config override {key}: expected {kind}.NAME with a plain name")
  if value.lower() == "none":
    if name not in table:
      raise errors.UnknownKeyError(f"config override {key}=none: there is no {kind} {name!r} "
                                   f"(have: {', '.join(table) or 'none'})")
    del table[name]
    if kind == "target":
      for ev_name, spec in list(c.evals.items()):
        kept = tuple(t for t in spec.get("targets", ()) if t != name)
        if spec.get("targets") and not kept:
          del c.evals[ev_name]
        elif spec.get("targets"):
          spec["targets"] = kept
    return
  parts = value.split(":")
  part = MULTICAM
  if kind == "source" and len(parts) >= 3 and parts[-1] in (MULTICAM, SINGLECAM):
    part = parts.pop()
  if len(parts) < 2 or not parts[0] or not parts[1]:
    form = "READER:ROOT[:multicam|singlecam]" if kind == "source" else "READER:ROOT"
    raise errors.ConfigError(f"config override {key}={value!r}: expected {form}, e.g. "
                             f"{kind}.mine=custom:/data/my_cams")
  reader, root = parts[0], os.path.abspath(os.path.expanduser(":".join(parts[1:])))
  if kind == "source":
    table[name] = source(reader, root, part)
    return
  table[name] = target(reader, root)
  reid = c.evals.get("reid")
  if reid is not None and reid.get("type") == protocols.REID and reid.get("targets") \
      and name not in reid["targets"]:
    reid["targets"] = (*reid["targets"], name)


def _set(c: ml_collections.ConfigDict, dotted: str, value: str, key: str) -> None:
  *parents, leaf = dotted.split(".")
  node = c
  for p in parents:
    node = node[p]
  current = node[leaf]
  try:
    if isinstance(current, bool):
      if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
        raise ValueError(value)
      node[leaf] = value.lower() in ("1", "true", "yes")
    elif isinstance(current, int):
      number = float(value)  # "1e3" is an integer too; "2.7" is not
      if not number.is_integer():
        raise ValueError(value)
      node[leaf] = int(number)
    elif isinstance(current, float):
      node[leaf] = float(value)
    else:
      node[leaf] = value
  except ValueError:
    kind = {bool: "true or false", int: "an integer", float: "a number"}.get(type(current))
    raise errors.ConfigError(f"config override {key}={value!r}: expected {kind} for "
                             f"{dotted}") from None


def parse(arg: str | None, file: str,
          presets: Mapping[str, Callable[[], ml_collections.ConfigDict]],
          short: Mapping[str, str],
          finalize: Callable[[ml_collections.ConfigDict], None] | None = None,
          data: Callable[[ml_collections.ConfigDict], None] = own_data,
          ) -> ml_collections.ConfigDict:
  """`arg` = "[preset][,key=value...]": the preset (the first of `presets` when absent), then
  the short overrides, then `data` when `data=DIR` names your own folder (`own_data`), then the
  `source.NAME=...` / `target.NAME=...` overrides, then `finalize` (e.g. `protocol_data`);
  returns the locked config."""
  parts = [p for p in (arg or "").split(",") if p]
  name = next(iter(presets))
  if parts and "=" not in parts[0]:
    name = parts.pop(0)
    if name not in presets and not (name == CUSTOM and "demo" in presets):
      raise errors.UnknownKeyError(f"unknown preset {name!r} in {file}; expected one of "
                                   f"{', '.join([*presets, CUSTOM])}")
  c = presets["demo" if name == CUSTOM else name]()
  if name == CUSTOM:
    c.name = c.name.removesuffix("_demo") + "_custom"
  named = []
  for p in parts:
    if "=" not in p:
      raise errors.ConfigError(f"config override {p!r} in {file} is not key=value")
    key, value = p.split("=", 1)
    if key.startswith((SOURCE, TARGET)):
      named.append((key, value))
    elif key in short:
      _set(c, short[key], value, key)
    else:
      raise errors.UnknownKeyError(f"unknown config override {key!r} in {file}; known: "
                                   f"{', '.join(sorted(short))}, {SOURCE}NAME, {TARGET}NAME")
  if name == CUSTOM and not c.data.custom:
    raise errors.ConfigError(f"preset {CUSTOM} of {file} trains on your own folder: add "
                             f"data=/path/to/folder (annotations.csv or .json inside)")
  if c.data.custom:
    data(c)
  for key, value in named:
    _named_dataset(c, key, value)
  if finalize is not None:
    finalize(c)
  c.lock()
  return c
