"""Converts pretrained weights (HF safetensors folders, Google ViT .npz) into orbax checkpoints.

  python -m retext_jax.tools.convert --from ~/hf/vit-base-patch16-224-in21k --kind vit \
      --out ~/ckpt/vit_b16_256x128 --image-size 256,128

writes `DIR/params/` (orbax StandardCheckpointer) and `DIR/model_config.json`
({"kind": ..., "config": {...}}). Configs point at DIR; the trainer calls `load_converted(DIR)`.
Bad input ends with one line on stderr and exit code 2, never a traceback.

Each kind names a module `retext_jax.models.<kind>` exposing
`convert_checkpoint(path, **options) -> (params, config)` and `config_from_dict(d)`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any

import jax
import numpy as np

from retext_jax.models.weights import WeightImportError
from retext_jax.tokenizers import copy_tokenizer_files

KINDS = ("vit", "bert", "clip")
CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def _model_module(kind: str):
  if kind not in KINDS:
    raise ValueError(f"unknown model kind {kind!r}; choose one of {KINDS}")
  try:
    return importlib.import_module(f"retext_jax.models.{kind}")
  except ModuleNotFoundError as e:
    if e.name == f"retext_jax.models.{kind}":
      raise ValueError(f"model kind {kind!r} is not available: {e.name} is not installed") from None
    raise


def convert(source: str, kind: str, out_dir: str, **options: Any) -> tuple[dict, Any]:
  """Imports `source` with the `kind` key table and writes params + config under `out_dir`."""
  import orbax.checkpoint as ocp

  module = _model_module(kind)
  options = {k: v for k, v in options.items() if v is not None}
  params, config = module.convert_checkpoint(os.fspath(source), **options)
  out_dir = os.path.abspath(os.fspath(out_dir))
  params_dir = os.path.join(out_dir, PARAMS_DIR)
  if os.path.exists(params_dir):
    raise ValueError(f"{params_dir} already exists; choose a new --out folder")
  os.makedirs(out_dir, exist_ok=True)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(params_dir, params)
  ckptr.wait_until_finished()
  meta = {"kind": kind, "source": os.path.abspath(os.fspath(source)), "config": config.to_dict()}
  with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
    json.dump(meta, f, indent=2)
  if os.path.isdir(source):  # a converted text encoder carries its own tokenizer
    copy_tokenizer_files(os.fspath(source), out_dir)
  return params, config


def load_converted(directory: str | os.PathLike) -> tuple[dict, Any]:
  """Reads a folder written by `convert`: (params as numpy-backed arrays, config dataclass)."""
  import orbax.checkpoint as ocp

  directory = os.path.abspath(os.fspath(directory))
  config_path = os.path.join(directory, CONFIG_FILE)
  params_dir = os.path.join(directory, PARAMS_DIR)
  if not os.path.isfile(config_path) or not os.path.isdir(params_dir):
    raise FileNotFoundError(
      f"{directory} is not a converted checkpoint: expected {CONFIG_FILE} and {PARAMS_DIR}/ "
      "(written by python -m retext_jax.tools.convert)"
    )
  try:
    with open(config_path) as f:
      meta = json.load(f)
    kind, config_dict = meta["kind"], meta["config"]
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    raise ValueError(f"{config_path} is malformed (needs 'kind' and 'config'): {e}") from None
  config = _model_module(kind).config_from_dict(config_dict)
  params = ocp.StandardCheckpointer().restore(params_dir)
  return params, config


def _image_size(text: str) -> tuple[int, int]:
  try:
    parts = tuple(int(p) for p in text.split(","))
  except ValueError:
    parts = ()
  if len(parts) == 1:
    parts = parts * 2
  if len(parts) != 2 or min(parts) <= 0:
    raise argparse.ArgumentTypeError(f"expected H,W (e.g. 256,128), got {text!r}")
  return parts


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m retext_jax.tools.convert", description=__doc__.split("\n\n")[0]
  )
  parser.add_argument("--from", dest="source", required=True, help="HF folder or .npz file")
  parser.add_argument("--kind", required=True, choices=KINDS)
  parser.add_argument("--out", required=True, help="output folder (must not hold params/)")
  parser.add_argument("--image-size", type=_image_size, help="H,W for image towers, e.g. 256,128")
  parser.add_argument("--stride", type=int, help="ViT patch stride (< patch: overlapping)")
  args = parser.parse_args(argv)
  options = {}
  if args.kind in ("vit", "clip"):
    options = {"image_size": args.image_size, "stride": args.stride}
  elif args.image_size or args.stride:
    parser.error(f"--image-size/--stride do not apply to --kind {args.kind}")
  try:
    params, config = convert(args.source, args.kind, args.out, **options)
  except WeightImportError as e:
    print(f"error: {e.summary(max_keys=5)}", file=sys.stderr)
    return 2
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  count = sum(int(np.prod(np.shape(x))) for x in jax.tree_util.tree_leaves(params))
  print(f"wrote {args.out}: {args.kind} with {count:,} params, config {CONFIG_FILE}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
