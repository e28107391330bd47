"""What the command-line tools share: model and image arguments, feature files, one-line errors.

Images come either from a folder (`--images DIR`, every .jpg/.jpeg/.png/.bmp below it; ids and
cameras parsed from Market-style names `0001_c2...` where present, else -1) or from a registered
dataset split (`--dataset market1501:/data/market1501:query`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable, Sequence

import numpy as np

from input_pipeline.records import Record
from retext_jax import errors, tf_setup
from retext_jax.inference import FEATURE_KINDS  # noqa: F401  (re-exported for the tools)

tf_setup.quiet()  # before any tool imports TensorFlow

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")


class _Parser(argparse.ArgumentParser):
  """argparse whose mistakes are user errors: `run` prints them as one `error:` line, exit 2."""

  def error(self, message: str):
    raise errors.ConfigError(f"{self.prog}: {message} (see --help)")


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
  return _Parser(prog=f"python -m retext_jax.tools.{prog}", description=doc,
                 formatter_class=argparse.RawDescriptionHelpFormatter)


def add_model_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--workdir", required=True, help="training workdir (checkpoints, tokenizer)")
  p.add_argument("--checkpoint", default="latest", choices=("latest", "best"))
  p.add_argument("--batch_size", type=int, default=64, help="images per forward pass")


def add_image_args(p: argparse.ArgumentParser, name: str = "", required: bool = True,
                   what: str = "images") -> None:
  """`--{name}images DIR` or `--{name}dataset READER:ROOT[:SPLIT]` (one of them)."""
  group = p.add_mutually_exclusive_group(required=required)
  group.add_argument(f"--{name}images", metavar="DIR", help=f"folder of {what}")
  group.add_argument(f"--{name}dataset", metavar="READER:ROOT[:SPLIT]",
                     help=f"{what} of a dataset split, e.g. market1501:/data/market1501:gallery")


def records_from_folder(folder: str) -> list[Record]:
  """Every image below `folder`, sorted by path; Market-style names give pid and camera."""
  if not os.path.isdir(folder):
    raise errors.MissingFileError(f"image folder {folder} does not exist")
  paths = sorted(
      os.path.join(d, f) for d, _, files in os.walk(os.path.abspath(folder)) for f in files
      if f.lower().endswith(IMAGE_EXTENSIONS)
  )
  if not paths:
    raise errors.DataError(f"no {'/'.join(IMAGE_EXTENSIONS)} images under {folder}")
  out = []
  for p in paths:
    m = _MARKET_NAME.match(os.path.basename(p))
    pid, cam = (int(m.group(1)), int(m.group(2)) - 1) if m else (-1, -1)
    out.append(Record(path=p, pid=pid, camid=cam, split="test"))
  return out


def records_from_dataset(spec: str, default_split: str = "gallery") -> list[Record]:
  """`READER:ROOT[:SPLIT]` -> the records of that split (read through the registry)."""
  from input_pipeline import registry

  parts = spec.split(":")
  if len(parts) not in (2, 3) or not all(parts):
    raise errors.ConfigError(f"--dataset {spec!r}: expected READER:ROOT[:SPLIT], e.g. "
                     "market1501:/data/market1501:query")
  reader, root = parts[:2]
  split = parts[2] if len(parts) == 3 else default_split
  ds = registry.get_dataset(reader, root)
  recs = ds.split(split)
  if not recs:
    raise errors.DataError(f"--dataset {spec!r}: split {split!r} of {reader} under {root} is empty")
  return recs


def records_from_args(args: argparse.Namespace, name: str = "",
                      default_split: str = "gallery") -> list[Record] | None:
  folder, dataset = getattr(args, f"{name}images"), getattr(args, f"{name}dataset")
  if folder:
    return records_from_folder(folder)
  return records_from_dataset(dataset, default_split) if dataset else None


def load_model(args: argparse.Namespace):
  from retext_jax import inference

  return inference.load(args.workdir, args.checkpoint)


# ------------------------------------------------------------------------------- feature files


def save_features(path: str, feats: np.ndarray, records: Sequence[Record], kind: str,
                  extra: dict | None = None) -> None:
  """`.safetensors` (features, pids, camids + paths in the metadata) or `.npy` (features) with a
  `<stem>.json` sidecar holding kind, paths, pids and camids."""
  pids = np.asarray([r.pid for r in records], np.int64)
  camids = np.asarray([r.camid for r in records], np.int64)
  info = {"kind": kind, "paths": [r.path for r in records], **(extra or {})}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if path.endswith(".safetensors"):
    from safetensors.numpy import save_file

    save_file({"features": np.ascontiguousarray(feats, np.float32), "pids": pids,
               "camids": camids}, path, metadata={"info": json.dumps(info)})
  elif path.endswith(".npy"):
    np.save(path, np.asarray(feats, np.float32))
    with open(_sidecar(path), "w") as f:
      json.dump({**info, "pids": pids.tolist(), "camids": camids.tolist()}, f)
  else:
    raise errors.ConfigError(f"--out {path}: expected a .npy or .safetensors file name")


def load_features(path: str) -> dict:
  """Inverse of `save_features`: {features, pids, camids, paths, kind, ...}."""
  if not os.path.isfile(path):
    raise errors.MissingFileError(f"feature file {path} does not exist")
  if path.endswith(".safetensors"):
    from safetensors import safe_open

    with safe_open(path, "np") as f:
      info = json.loads((f.metadata() or {}).get("info", "{}"))
      arrays = {k: f.get_tensor(k) for k in ("features", "pids", "camids")}
    return {**info, **arrays}
  if path.endswith(".npy"):
    if not os.path.isfile(_sidecar(path)):
      raise errors.MissingFileError(f"{_sidecar(path)} (ids, cameras, paths of {path}) is missing")
    with open(_sidecar(path)) as f:
      info = json.load(f)
    return {**info, "features": np.load(path), "pids": np.asarray(info["pids"]),
            "camids": np.asarray(info["camids"])}
  raise errors.ConfigError(f"feature file {path}: expected .npy or .safetensors")


def _sidecar(npy_path: str) -> str:
  return npy_path[: -len(".npy")] + ".json"


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
  """Calls `main`; a user error becomes one line on stderr and exit code 2
  (RETEXT_TRACEBACK=1 shows the traceback)."""
  try:
    return main(argv)
  except errors.UserError as e:
    return errors.report(e)
