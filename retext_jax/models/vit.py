"""Vision Transformer image encoder for Re-ID (ViT with TransReID's options, MAE-style masking).

Images are NHWC. Re-ID crops are 256x128, so the position embeddings of a 224x224 checkpoint are
resized to the model's grid at import time (bicubic, as HF's `interpolate_pos_encoding`).
TransReID extras: overlapping patches (stride < patch) and a camera (side-information) embedding.

  config = vit_config("base", image_size=(256, 128))
  out = ViT(config).apply({"params": params}, images, camera=cam_ids, patch_mask=mask)
  (`num_masked`, the masked count per row, must be given with a traced mask under jit)
  out["cls"] [B, D], out["patch_tokens"] [B, N, D], out["tokens"] [B, 1 + N, D],
  out["pooled"] [B, D] when config.pooler, out["visible_ids"] [B, N_visible] when patch_mask is
  given (the patch indices kept, in order, so a decoder can scatter them back).

Params: patch_embed (Conv) or stem (ConvStem, `stem="conv"`), cls_token [1,1,D],
pos_embed [1,1+N,D], camera_embed [C, D],
block_{i} (layers.PreNormBlock), norm, pooler (Dense).
Converters: `convert_checkpoint(path, image_size=..., stride=...)` reads an HF ViTModel /
ViTForImageClassification folder or a Google ViT `.npz` (vit_jax AugReg or big_vision layout).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from retext_jax import errors
from retext_jax.models import layers
from retext_jax.models import weights as W
from retext_jax.models.configs import DictConfig, PatchGrid

_SIZES = {  # width, depth, heads (mlp = 4 x width)
  "tiny": (192, 12, 3),
  "small": (384, 12, 6),
  "base": (768, 12, 12),
  "large": (1024, 24, 16),
}


@dataclasses.dataclass(frozen=True)
class ViTConfig(PatchGrid, DictConfig):
  """ViT hyper-parameters. `stride` < `patch_size` gives TransReID's overlapping patches."""

  image_size: tuple[int, int] = (224, 224)
  patch_size: int = 16
  stride: int | None = None  # None: equal to patch_size
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  channels: int = 3
  activation: str = "gelu"
  layer_norm_eps: float = 1e-6  # Google ViT / timm; HF ViT checkpoints use 1e-12
  dropout_rate: float = 0.0
  attn_dropout_rate: float = 0.0
  drop_path_rate: float = 0.0  # linearly increasing over the blocks, as in timm / TransReID
  num_cameras: int = 0  # > 0 adds TransReID's side-information embedding
  camera_coef: float = 3.0  # TransReID's sie_xishu
  pooler: bool = False  # HF ViTPooler: Dense + tanh on the CLS token
  stem: str = "patch"  # "patch" (one strided conv) | "conv" (ConvStem: stacked 3x3 convs)

  def __post_init__(self):
    super().__post_init__()
    if self.stem not in ("patch", "conv"):
      raise errors.ConfigError(f"unknown ViT stem {self.stem!r}; expected 'patch' or 'conv'")
    p = self.patch_size
    if self.stem == "conv" and (p & (p - 1) or self.patch_stride != p
                                or any(s % p for s in self.image_size)):
      raise errors.ConfigError(
          f"stem='conv' needs a power-of-two patch, stride equal to it and an image size "
          f"divisible by it; got patch {p}, stride {self.patch_stride}, image {self.image_size}")

  @classmethod
  def from_hf_config(cls, hf: dict[str, Any], **overrides: Any) -> ViTConfig:
    """From an HF ViT `config.json`; `overrides` (image_size=(256, 128), stride, ...) win."""
    size = hf.get("image_size", 224)
    fields = dict(
      image_size=tuple(size) if isinstance(size, list | tuple) else (size, size),
      patch_size=hf.get("patch_size", 16),
      hidden_size=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"],
      num_heads=hf["num_attention_heads"],
      mlp_dim=hf["intermediate_size"],
      channels=hf.get("num_channels", 3),
      activation=hf.get("hidden_act", "gelu"),
      layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
    )
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**fields)


def vit_config(size: str = "base", patch: int = 16, **kwargs: Any) -> ViTConfig:
  """Named sizes: "tiny" 192/12/3, "small" 384/12/6, "base" 768/12/12, "large" 1024/24/16."""
  if size not in _SIZES:
    raise errors.ConfigError(f"unknown ViT size {size!r}; choose one of {list(_SIZES)}")
  width, depth, heads = _SIZES[size]
  fields = dict(hidden_size=width, num_layers=depth, num_heads=heads, mlp_dim=4 * width)
  return ViTConfig(patch_size=patch, **{**fields, **kwargs})


def config_from_dict(d: dict[str, Any]) -> ViTConfig:
  return ViTConfig.from_dict(d)


class ConvStem(nn.Module):
  """Early convolutions (Xiao et al. 2021, "Early Convolutions Help Transformers See Better"):
  log2(patch) 3x3 stride-2 convolutions, each followed by LayerNorm and GELU, widths doubling up
  to `width`, then a 1x1 projection: the same token grid as a patch x patch embedding, but
  local features that a small ViT trained from scratch learns from far fewer images."""

  width: int
  patch: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    n = int(np.log2(self.patch))
    x = images
    for i in range(n):
      x = nn.Conv(self.width >> (n - 1 - i), (3, 3), strides=(2, 2), padding=1,
                  dtype=self.dtype, name=f"conv_{i}")(x)
      x = nn.LayerNorm(dtype=self.dtype, name=f"norm_{i}")(x)
      x = nn.gelu(x)
    return nn.Conv(self.width, (1, 1), dtype=self.dtype, name="proj")(x)


class ViT(nn.Module):
  """ViT encoder returning CLS and patch tokens (see the module docstring)."""

  config: ViTConfig
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(
    self,
    images: jax.Array,
    *,
    camera: jax.Array | None = None,
    patch_mask: jax.Array | None = None,
    num_masked: int | None = None,
    train: bool = False,
  ) -> dict[str, jax.Array]:
    cfg = self.config
    d = cfg.hidden_size
    if tuple(images.shape[1:3]) != cfg.image_size:
      raise ValueError(f"images are {images.shape[1:3]}, the model expects {cfg.image_size} (HW)")
    if cfg.stem == "conv":
      pixels = images.astype(self.dtype)
      if patch_mask is not None:  # blank masked patches first: 3x3 convs would leak them
        grid_mask = patch_mask.reshape(-1, *cfg.grid)
        pixel_mask = jnp.repeat(jnp.repeat(grid_mask, cfg.patch_size, 1), cfg.patch_size, 2)
        pixels = jnp.where(pixel_mask[..., None], 0, pixels)
      x = ConvStem(d, cfg.patch_size, dtype=self.dtype, name="stem")(pixels)
    else:
      x = nn.Conv(
        d,
        (cfg.patch_size,) * 2,
        strides=(cfg.patch_stride,) * 2,
        padding="VALID",
        dtype=self.dtype,
        name="patch_embed",
      )(images.astype(self.dtype))
    b = x.shape[0]
    x = x.reshape(b, -1, d)
    init = nn.initializers.normal(0.02)
    cls = self.param("cls_token", nn.initializers.zeros, (1, 1, d))
    pos = self.param("pos_embed", init, (1, 1 + cfg.num_patches, d))
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(x.dtype), x], axis=1)
    x = x + pos.astype(x.dtype)
    if cfg.num_cameras:
      table = self.param("camera_embed", init, (cfg.num_cameras, d))
      # Images of an unknown camera (camera=None: every test-time feature function, the
      # exported extractor, a user's own photos) get the mean camera embedding, the expected
      # value over the training cameras (TransReID adds the test image's own camera).
      side = table.mean(axis=0, keepdims=True) if camera is None else table[camera]
      x = x + (cfg.camera_coef * side)[:, None, :].astype(x.dtype)

    visible_ids = None
    if patch_mask is not None:
      x, visible_ids = _keep_visible(x, patch_mask, num_masked)

    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)
    rates = np.linspace(0.0, cfg.drop_path_rate, cfg.num_layers) if cfg.num_layers else []
    for i in range(cfg.num_layers):
      x = layers.PreNormBlock(
        num_heads=cfg.num_heads,
        mlp_dim=cfg.mlp_dim,
        activation=cfg.activation,
        layer_norm_eps=cfg.layer_norm_eps,
        dropout_rate=cfg.dropout_rate,
        attn_dropout_rate=cfg.attn_dropout_rate,
        drop_path_rate=float(rates[i]),
        dtype=self.dtype,
        name=f"block_{i}",
      )(x, deterministic=not train)
    x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=self.dtype, name="norm")(x)

    out = {"tokens": x, "cls": x[:, 0], "patch_tokens": x[:, 1:]}
    if cfg.pooler:
      out["pooled"] = jnp.tanh(nn.Dense(d, dtype=self.dtype, name="pooler")(x[:, 0]))
    if visible_ids is not None:
      out["visible_ids"] = visible_ids
    return out


def _keep_visible(
  x: jax.Array, patch_mask: jax.Array, num_masked: int | None
) -> tuple[jax.Array, jax.Array]:
  """Drops masked patch tokens (True = masked); every row masks the same number of patches.

  `num_masked` is static under jit (the gather's size); a concrete mask is checked against it,
  since a row masking another count would silently keep the wrong patches.
  """
  n = patch_mask.shape[1]
  if n != x.shape[1] - 1:
    raise ValueError(f"patch_mask has {n} patches, the model has {x.shape[1] - 1}")
  try:
    counts = np.asarray(patch_mask).sum(axis=1)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    counts = None  # traced: the caller's num_masked is trusted
  if num_masked is None:
    if counts is None:
      raise ValueError(
        "patch_mask is traced (under jit): pass num_masked=<masked patches per row> as well"
      )
    if counts.min() != counts.max():
      raise ValueError(f"every row of patch_mask must mask as many patches, got {counts.tolist()}")
    num_masked = int(counts[0])
  elif counts is not None and (counts != num_masked).any():
    raise ValueError(f"patch_mask masks {sorted(set(counts.tolist()))} patches per row where "
                     f"num_masked={num_masked} (count them with input_pipeline.masking.num_masked)")
  # A stable argsort puts the visible patches (False) first, in their original order.
  order = jnp.argsort(patch_mask.astype(jnp.int32), axis=1, stable=True)
  visible_ids = order[:, : n - num_masked]
  patches = jnp.take_along_axis(x[:, 1:], visible_ids[..., None], axis=1)
  return jnp.concatenate([x[:, :1], patches], axis=1), visible_ids


# ----------------------------------------------------------------------------- weight import


def abstract_params(config: ViTConfig) -> dict[str, Any]:
  """The params tree as ShapeDtypeStructs (no allocation): the target of a key table."""
  images = jax.ShapeDtypeStruct((1, *config.image_size, config.channels), jnp.float32)
  camera = jax.ShapeDtypeStruct((1,), jnp.int32) if config.num_cameras else None
  init = lambda rng, x, cam: ViT(config).init(rng, x, camera=cam)
  return jax.eval_shape(init, jax.random.key(0), images, camera)["params"]


def hf_rules(config: ViTConfig, src_grid: tuple[int, int]) -> list[W.Rule]:
  """HF `ViTModel` keys -> our params."""
  lyr = "encoder.layer.{i}."
  rules = [
    W.Rule("cls_token", "embeddings.cls_token"),
    W.Rule(
      "pos_embed",
      "embeddings.position_embeddings",
      W.resize_posemb(config.grid, 1, src_grid=src_grid),
    ),
    W.Rule("patch_embed/kernel", "embeddings.patch_embeddings.projection.weight", W.conv_oihw),
    W.Rule("patch_embed/bias", "embeddings.patch_embeddings.projection.bias"),
    W.Rule("norm/scale", "layernorm.weight"),
    W.Rule("norm/bias", "layernorm.bias"),
    W.Rule("pooler/kernel", "pooler.dense.weight", W.linear),
    W.Rule("pooler/bias", "pooler.dense.bias"),
  ]
  for ours, theirs in [
    ("norm1", "layernorm_before"),
    ("norm2", "layernorm_after"),
  ]:
    rules += [
      W.Rule(f"block_{{i}}/{ours}/scale", f"{lyr}{theirs}.weight"),
      W.Rule(f"block_{{i}}/{ours}/bias", f"{lyr}{theirs}.bias"),
    ]
  for ours, theirs in [
    ("attn/query", "attention.attention.query"),
    ("attn/key", "attention.attention.key"),
    ("attn/value", "attention.attention.value"),
    ("attn/out", "attention.output.dense"),
    ("mlp/fc1", "intermediate.dense"),
    ("mlp/fc2", "output.dense"),
  ]:
    rules += [
      W.Rule(f"block_{{i}}/{ours}/kernel", f"{lyr}{theirs}.weight", W.linear),
      W.Rule(f"block_{{i}}/{ours}/bias", f"{lyr}{theirs}.bias"),
    ]
  return rules


def npz_rules(config: ViTConfig, src_grid: tuple[int, int]) -> list[W.Rule]:
  """Google ViT `.npz` keys -> our params.

  The first source name is the vit_jax (AugReg) layout, the second big_vision's.
  """
  blk = "Transformer/encoderblock_{i}/"
  attn = (blk + "MultiHeadDotProductAttention_1/", blk + "MultiHeadDotProductAttention_0/")
  rules = [
    W.Rule("cls_token", "cls"),
    W.Rule(
      "pos_embed",
      ("Transformer/posembed_input/pos_embedding", "pos_embedding"),
      W.resize_posemb(config.grid, 1, src_grid=src_grid),
    ),
    W.Rule("patch_embed/kernel", "embedding/kernel"),  # already HWIO
    W.Rule("patch_embed/bias", "embedding/bias"),
    W.Rule("norm/scale", "Transformer/encoder_norm/scale"),
    W.Rule("norm/bias", "Transformer/encoder_norm/bias"),
    W.Rule("pooler/kernel", "pre_logits/kernel"),
    W.Rule("pooler/bias", "pre_logits/bias"),
  ]
  for ours, names in [
    ("norm1", ("LayerNorm_0",)),
    ("norm2", ("LayerNorm_2", "LayerNorm_1")),
  ]:
    for p in ("scale", "bias"):
      rules.append(W.Rule(f"block_{{i}}/{ours}/{p}", tuple(f"{blk}{n}/{p}" for n in names)))
  for ours, name in [("query", "query"), ("key", "key"), ("value", "value"), ("out", "out")]:
    for p in ("kernel", "bias"):
      rules.append(
        W.Rule(
          f"block_{{i}}/attn/{ours}/{p}",
          tuple(f"{a}{name}/{p}" for a in attn),
          W.merge_heads,
        )
      )
  for ours, dense in [("fc1", "Dense_0"), ("fc2", "Dense_1")]:
    for p in ("kernel", "bias"):
      rules.append(
        W.Rule(
          f"block_{{i}}/mlp/{ours}/{p}",
          (f"{blk}MlpBlock_3/{dense}/{p}", f"{blk}MlpBlock_0/{dense}/{p}"),
        )
      )
  return rules


_HF_IGNORE = (r"(vit\.)?embeddings\.mask_token", r"classifier\..*")
_NPZ_IGNORE = (r"head/.*", r"pre_logits/.*")


def convert_checkpoint(
  path: str,
  *,
  image_size: tuple[int, int] | None = None,
  stride: int | None = None,
  **overrides: Any,
) -> tuple[dict[str, Any], ViTConfig]:
  """Imports an HF ViT folder or a Google ViT `.npz` for a model at `image_size` (H, W).

  The position embeddings are resized to the new grid; classification heads are dropped.
  """
  if os.fspath(path).endswith(".npz"):
    return _convert_npz(path, image_size, stride, overrides)
  tensors, hf = W.load_safetensors_dir(path)
  prefix = W.detect_prefix(tensors, "embeddings.cls_token", ("", "vit."))
  hf_size = hf.get("image_size", 224)
  hf_size = tuple(hf_size) if isinstance(hf_size, list | tuple) else (hf_size, hf_size)
  patch = hf.get("patch_size", 16)
  src_grid = (hf_size[0] // patch, hf_size[1] // patch)
  pooler = prefix + "pooler.dense.weight" in tensors
  try:
    config = ViTConfig.from_hf_config(
      hf, image_size=image_size, stride=stride, **{"pooler": pooler, **overrides}
    )
  except KeyError as e:
    raise W.WeightImportError(
      f"{path}/config.json (model_type {hf.get('model_type')!r}) lacks {e.args[0]!r}: "
      "not an HF ViT config; is the model kind right?"
    ) from None
  params = W.apply_key_table(
    hf_rules(config, src_grid),
    tensors,
    abstract_params(config),
    prefix=prefix,
    ignore=_HF_IGNORE,
    table_name="HF ViTModel",
    source_name=os.fspath(path),
  )
  return params, config


def _convert_npz(path, image_size, stride, overrides) -> tuple[dict[str, Any], ViTConfig]:
  tensors = W.load_npz(path)
  prefix = W.detect_prefix(tensors, "embedding/kernel", ("", "params/", "img/", "params/img/"))
  get = lambda k: tensors.get(prefix + k)
  kernel = get("embedding/kernel")
  blocks = {
    int(m.group(1))
    for k in tensors
    if (m := re.match(re.escape(prefix) + r"Transformer/encoderblock_(\d+)/", k))
  }
  query = get("Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel")
  if query is None:
    query = get("Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel")
  fc1 = get("Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel")
  if fc1 is None:
    fc1 = get("Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel")
  pos = get("Transformer/posembed_input/pos_embedding")
  pos = get("pos_embedding") if pos is None else pos
  if kernel is None or query is None or fc1 is None or pos is None or not blocks:
    sample = ", ".join(sorted(tensors)[:4])
    raise W.WeightImportError(
      f"{path} is not a Google ViT .npz: it lacks embedding/kernel, pos_embedding, or "
      f"Transformer/encoderblock_0 attention/MLP kernels (it holds {sample}, ...)"
    )
  patch = kernel.shape[0]
  side = int(round((pos.shape[-2] - 1) ** 0.5))
  src_grid = (side, side)
  fields = dict(
    image_size=image_size or (side * patch,) * 2,
    patch_size=patch,
    stride=stride,
    hidden_size=kernel.shape[-1],
    num_layers=max(blocks) + 1,
    num_heads=query.shape[1],
    mlp_dim=fc1.shape[-1],
    channels=kernel.shape[2],
    layer_norm_eps=1e-6,
    pooler=get("pre_logits/kernel") is not None,
  )
  config = ViTConfig(**{**fields, **overrides})
  params = W.apply_key_table(
    npz_rules(config, src_grid),
    tensors,
    abstract_params(config),
    prefix=prefix,
    ignore=tuple(re.escape(prefix) + p for p in _NPZ_IGNORE)
    if not config.pooler
    else (re.escape(prefix) + _NPZ_IGNORE[0],),
    table_name="Google ViT npz",
    source_name=os.fspath(path),
  )
  return params, config
