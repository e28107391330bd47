"""Importing pretrained weights: file readers plus key tables that build Flax params.

Users bring local Hugging Face safetensors folders or Google ViT `.npz` files; nothing is
downloaded and nothing is unpickled. A key table is a readable list of rows

    Rule("block_{i}/attn/query/kernel", "encoder.layer.{i}.attention.attention.query.weight",
         linear)

saying which source tensor fills which Flax param and through which named transform. Applying a
table against the abstract params (from `jax.eval_shape`) checks every key: missing targets,
unexpected sources and wrong shapes are all collected and raised together as `WeightImportError`.

Stable API (the ViT, BERT and CLIP converters build on it):
  load_safetensors_dir(path) -> (tensors: dict[str, np.ndarray], hf_config: dict)
  load_npz(path) -> dict[str, np.ndarray]
  Rule(target, source, transform=identity)     target/source may hold `{i}`-style placeholders;
                                               source may be a tuple of alternatives (first found)
  apply_key_table(rules, tensors, target, *, prefix="", ignore=(), allow_missing=(),
                  allow_unexpected=(), table_name="", source_name="") -> nested dict of np arrays
  detect_prefix(tensors, probe, candidates) -> str
  transforms (fn(x, target_shape) -> array): identity, linear, conv_oihw, merge_heads,
                  resize_posemb(grid, num_prefix=1, method="bicubic")
  resize_grid(x[h, w, ...], (h2, w2), method) -> numpy; matches torch `interpolate(...,
                  align_corners=False)` for "bicubic" / "bilinear"
  WeightImportError(UserError, ValueError): .missing, .unexpected, .wrong_shape, .summary(max_keys)

Model modules that can be converted (vit, bert, clip) expose the same two functions, which
`retext_jax.tools.convert` dispatches to:
  convert_checkpoint(path: str, **options) -> (params: nested dict, config dataclass with to_dict())
  config_from_dict(d: dict) -> config dataclass
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flax import traverse_util

from retext_jax import errors

Transform = Callable[[np.ndarray, tuple[int, ...]], np.ndarray]


class WeightImportError(errors.UserError, ValueError):
  """A checkpoint does not fit the model: every offending key is listed."""

  def __init__(
    self,
    headline: str,
    missing: Sequence[str] = (),
    unexpected: Sequence[str] = (),
    wrong_shape: Sequence[str] = (),
  ):
    self.headline = headline
    self.missing = list(missing)
    self.unexpected = list(unexpected)
    self.wrong_shape = list(wrong_shape)
    super().__init__(self.summary(max_keys=None))

  def summary(self, max_keys: int | None = 5) -> str:
    """One line; with `max_keys` only the first few keys of each kind are named."""
    parts = [self.headline]
    for label, keys in (
      ("missing", self.missing),
      ("unexpected", self.unexpected),
      ("wrong shape", self.wrong_shape),
    ):
      if keys:
        shown = keys if max_keys is None else keys[:max_keys]
        more = "" if len(shown) == len(keys) else f", ... ({len(keys) - len(shown)} more)"
        parts.append(f"{len(keys)} {label}: {', '.join(shown)}{more}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- file readers


def _weights_help(folder: str) -> str:
  return (
    f"no weights in {folder}: looked for model.safetensors and model.safetensors.index.json "
    "(+ shards)"
  )


def load_safetensors_dir(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
  """Reads a Hugging Face folder (`config.json` + single or sharded safetensors) without torch.

  `path` may also name a `.safetensors` file; its folder must hold the `config.json`.
  """
  from safetensors.numpy import load_file

  path = os.fspath(path)
  if os.path.isfile(path) and path.endswith(".safetensors"):
    folder, files = os.path.dirname(path) or ".", [path]
  elif os.path.isdir(path):
    folder = path
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(single):
      files = [single]
    elif os.path.isfile(index):
      files = _shards_from_index(index)
    else:
      msg = _weights_help(folder)
      if os.path.isfile(os.path.join(folder, "pytorch_model.bin")):
        msg += "; found pytorch_model.bin, a torch pickle we do not load: re-save the model with "
        msg += "save_pretrained(dir) (transformers writes safetensors by default)"
      raise WeightImportError(msg)
  else:
    raise WeightImportError(f"{path} does not exist (expected a Hugging Face model folder)")

  config_path = os.path.join(folder, "config.json")
  if not os.path.isfile(config_path):
    raise WeightImportError(f"no config.json in {folder} (the model hyper-parameters come from it)")
  try:
    with open(config_path) as f:
      hf_config = json.load(f)
  except json.JSONDecodeError as e:
    raise WeightImportError(f"{config_path} is not valid JSON: {e}") from None

  tensors: dict[str, np.ndarray] = {}
  for file in files:
    try:
      tensors.update(load_file(file))
    except Exception as e:  # safetensors raises its own error types for corrupt headers.
      raise WeightImportError(f"cannot read {file}: {e}") from None
  return tensors, hf_config


def _shards_from_index(index_path: str) -> list[str]:
  folder = os.path.dirname(index_path)
  try:
    with open(index_path) as f:
      weight_map = json.load(f)["weight_map"]
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    raise WeightImportError(f"{index_path} is not a safetensors index (weight_map): {e}") from None
  files = [os.path.join(folder, name) for name in sorted(set(weight_map.values()))]
  absent = [f for f in files if not os.path.isfile(f)]
  if absent:
    raise WeightImportError(f"{index_path} names shards that do not exist: {', '.join(absent)}")
  return files


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a `.npz` of named arrays (Google ViT / big_vision checkpoints), never unpickling."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise WeightImportError(f"{path} does not exist (expected a .npz checkpoint)")
  try:
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  except (ValueError, OSError) as e:
    raise WeightImportError(f"cannot read {path} as .npz: {e}") from None


# ----------------------------------------------------------------------------- transforms


def identity(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  del shape
  return x


def linear(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """torch Linear weight [out, in] -> flax Dense kernel [in, out]."""
  del shape
  return x.T


def conv_oihw(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """torch Conv2d weight [out, in, h, w] -> flax Conv kernel [h, w, in, out]."""
  del shape
  return x.transpose(2, 3, 1, 0)


def merge_heads(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """Per-head kernels ([D, H, Dh] in, [H, Dh, D] out, bias [H, Dh]) -> flat Dense shapes."""
  if x.size != int(np.prod(shape)):
    return x  # leave it: the shape check names the mismatch
  return x.reshape(shape)


def _kernel_matrix(n_in: int, n_out: int, method: str) -> np.ndarray:
  """[n_out, n_in] interpolation weights with torch's align_corners=False sampling."""
  scale = n_in / n_out
  src = (np.arange(n_out) + 0.5) * scale - 0.5
  w = np.zeros((n_out, n_in), np.float64)
  rows = np.arange(n_out)
  if method == "bilinear":
    src = np.maximum(src, 0.0)
    i0 = np.floor(src).astype(int)
    frac = src - i0
    i1 = np.minimum(i0 + 1, n_in - 1)
    np.add.at(w, (rows, i0), 1.0 - frac)
    np.add.at(w, (rows, i1), frac)
  elif method == "bicubic":
    a = -0.75  # torch's (and OpenCV's) Keys coefficient
    i0 = np.floor(src).astype(int)
    t = src - i0
    near = lambda d: ((a + 2) * d - (a + 3)) * d * d + 1  # |d| <= 1
    far = lambda d: ((a * d - 5 * a) * d + 8 * a) * d - 4 * a  # 1 < |d| < 2
    taps = (far(t + 1), near(t), near(1 - t), far(2 - t))
    for offset, weight in zip((-1, 0, 1, 2), taps, strict=True):
      np.add.at(w, (rows, np.clip(i0 + offset, 0, n_in - 1)), weight)
  else:
    raise ValueError(f"unknown resize method {method!r}; use 'bicubic' or 'bilinear'")
  return w


def resize_grid(x: np.ndarray, size: tuple[int, int], method: str = "bicubic") -> np.ndarray:
  """Resizes [h, w, ...] to [size[0], size[1], ...] like torch `interpolate(align_corners=False)`.

  HF ViT's `interpolate_pos_encoding` resizes with torch bicubic (a=-0.75, no antialias); doing
  the same here keeps converted 256x128 models equal to HF's. TransReID uses "bilinear".
  """
  wh = _kernel_matrix(x.shape[0], size[0], method)
  ww = _kernel_matrix(x.shape[1], size[1], method)
  out = np.einsum("oh,hw...,pw->op...", wh, x.astype(np.float64), ww)
  return out.astype(x.dtype)


def resize_posemb(
  grid: tuple[int, int],
  num_prefix: int = 1,
  method: str = "bicubic",
  src_grid: tuple[int, int] | None = None,
) -> Transform:
  """Transform for [1, prefix + h*w, D] position embeddings to the model's `grid`.

  The prefix (CLS) rows are kept; the source grid is square unless `src_grid` is given.
  """

  def transform(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    del shape
    lead = x.shape[:-2]
    tokens = x.reshape(-1, x.shape[-2], x.shape[-1])[0]
    prefix, patches = tokens[:num_prefix], tokens[num_prefix:]
    n = patches.shape[0]
    sh, sw = src_grid or (int(round(n**0.5)),) * 2
    if sh * sw != n:
      raise WeightImportError(
        f"position embedding has {n} patch rows, not a {sh}x{sw} grid; pass src_grid"
      )
    if (sh, sw) != tuple(grid):
      patches = resize_grid(patches.reshape(sh, sw, -1), tuple(grid), method)
      patches = patches.reshape(grid[0] * grid[1], -1)
    return np.concatenate([prefix, patches], 0).reshape(*lead, -1, x.shape[-1])

  transform.__name__ = f"resize_posemb_to_{grid[0]}x{grid[1]}"
  return transform


# ----------------------------------------------------------------------------- key tables


@dataclasses.dataclass(frozen=True)
class Rule:
  """One row of a key table: which source tensor fills which target param, and how."""

  target: str
  source: str | tuple[str, ...]
  transform: Transform = identity

  @property
  def sources(self) -> tuple[str, ...]:
    return (self.source,) if isinstance(self.source, str) else tuple(self.source)


def _pattern(template: str) -> re.Pattern:
  parts = re.split(r"\{(\w+)\}", template)
  regex = "".join(re.escape(p) if k % 2 == 0 else f"(?P<{p}>\\d+)" for k, p in enumerate(parts))
  return re.compile(regex + "$")


def detect_prefix(tensors: Mapping[str, Any], probe: str, candidates: Iterable[str]) -> str:
  """The first prefix p with p + probe among the keys ("bert.", "vit.", "params/"...), else ""."""
  for p in candidates:
    if p + probe in tensors:
      return p
  return ""


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
  return {"/".join(k): v for k, v in traverse_util.flatten_dict(tree).items()}


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def apply_key_table(
  rules: Sequence[Rule],
  tensors: Mapping[str, np.ndarray],
  target: Mapping[str, Any],
  *,
  prefix: str = "",
  ignore: Sequence[str] = (),
  allow_missing: Sequence[str] = (),
  allow_unexpected: Sequence[str] = (),
  table_name: str = "",
  source_name: str = "",
) -> dict[str, Any]:
  """Builds the params tree shaped like `target` from `tensors`, checking every key.

  Args:
    rules: the key table.
    tensors: source name -> array.
    target: params tree of arrays or `jax.ShapeDtypeStruct` (e.g. from `jax.eval_shape`).
    prefix: prepended to every source name ("bert." for BertForXxx checkpoints).
    ignore: regexes (full match) of source keys that are dropped silently (buffers, heads).
    allow_missing: regexes of target paths that may lack a source; they keep `target`'s value,
      which must then be a concrete array (e.g. a freshly initialised head).
    allow_unexpected: regexes of source keys that may be left over.
    table_name / source_name: named in the error message.

  Raises:
    WeightImportError: naming every missing, unexpected and wrongly shaped key.
  """
  compiled = [(_pattern(r.target), r) for r in rules]
  full = lambda pats, key: any(re.fullmatch(p, key) for p in pats)
  out: dict[str, Any] = {}
  used: set[str] = set()
  missing, wrong, no_rule = [], [], []
  for path, leaf in flatten(target).items():
    match = next(((m, r) for pat, r in compiled if (m := pat.match(path))), None)
    if match is None:
      no_rule.append(path)
      continue
    m, rule = match
    keys = [prefix + s.format(**m.groupdict()) for s in rule.sources]
    key = next((k for k in keys if k in tensors), None)
    if key is None:
      if full(allow_missing, path) and hasattr(leaf, "__array__"):
        out[path] = np.asarray(leaf)  # keeps the initialised value
      else:
        missing.append(f"{keys[0]} (for {path})")
      continue
    used.add(key)
    shape = tuple(leaf.shape)
    value = np.asarray(rule.transform(np.asarray(tensors[key]), shape))
    if value.shape != shape:
      name = getattr(rule.transform, "__name__", "transform")
      wrong.append(f"{key} -> {path}: {value.shape} after {name}, expected {shape}")
      continue
    out[path] = value.astype(getattr(leaf, "dtype", value.dtype))
  if no_rule:  # a bug in the table, not in the checkpoint: say so plainly.
    raise WeightImportError(f"key table {table_name!r} has no rule for params", missing=no_rule)
  unexpected = [
    k for k in tensors if k not in used and not full(ignore, k) and not full(allow_unexpected, k)
  ]
  if missing or unexpected or wrong:
    where = f" in {source_name}" if source_name else ""
    headline = f"weights{where} do not fit the {table_name or 'model'} key table"
    if len(missing) > len(used):
      sample = ", ".join(sorted(tensors)[:4])
      headline += f" (most keys differ: is the model kind right? the file holds {sample}, ...)"
    raise WeightImportError(headline, missing, unexpected, wrong)
  return unflatten(out)
