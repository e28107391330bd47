"""CLIP image and text towers (Flax Linen) with Hugging Face `CLIPModel` weight import.

The layout follows HF's CLIPModel exactly, so converted OpenAI checkpoints give the same numbers:
  vision: patch conv (no bias) + class token + position embeddings -> pre-LN -> pre-norm blocks
          -> post-LN on the CLS token -> `projection` (no bias)
  text:   token + position embeddings -> causal pre-norm blocks (plus the padding mask)
          -> final LN -> the end-of-text token's state -> `projection` (no bias)
Images are NHWC, already normalised with `CLIP_MEAN` / `CLIP_STD`. Params are float32; `dtype`
sets the compute dtype. Person Re-ID feeds 256x128 crops to a 224x224 model: the position
embeddings are then resized to the new grid on the fly with torch's bicubic, as HF does with
`interpolate_pos_encoding=True`, or once at import (`load_clip(path, image_size=(256, 128))`).

API:
  CLIPConfig(vision, text, projection_dim, logit_scale_init); .from_hf_config(d), .to_dict()
  config_from_dict(d) -> CLIPConfig;  vit_b16() -> CLIPConfig (openai/clip-vit-base-patch16)
  CLIP(config, dtype)(images, ids, mask) -> {"image", "text", "logits_per_image", ...}
    .encode_image(images) -> {"cls", "patch_tokens", "tokens", "embedding"}
    .encode_text(ids, mask) -> {"tokens", "pooled", "embedding"}
  load_clip(path, *, image_size=None, stride=None) -> (params, config)
  convert_checkpoint(path, **options) == load_clip (the `tools.convert --kind clip` entry point)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from retext_jax import errors
from retext_jax.linalg import l2_normalize
from retext_jax.models.configs import PatchGrid
from retext_jax.models.layers import PreNormBlock, padding_mask
from retext_jax.models.weights import (
  Rule,
  WeightImportError,
  apply_key_table,
  conv_oihw,
  identity,
  linear,
  load_safetensors_dir,
  resize_grid,
  resize_posemb,
)

Dtype = jnp.dtype | type

# OpenAI CLIP's pixel statistics (RGB, images scaled to [0, 1] first).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ----------------------------------------------------------------------------- configs


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig(PatchGrid):
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  patch_size: int = 16
  image_size: tuple[int, int] = (224, 224)  # the grid the position embeddings are stored for
  stride: int | None = None  # None: patch_size; smaller gives TransReID's overlapping patches
  num_channels: int = 3
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  attn_dropout_rate: float = 0.0
  drop_path_rate: float = 0.0  # linearly increasing over the blocks, as in timm / TransReID
  num_cameras: int = 0  # > 0: a learned camera embedding added to every token (SIE, CLIP-ReID)


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
  vocab_size: int = 49408
  hidden_size: int = 512
  num_layers: int = 12
  num_heads: int = 8
  mlp_dim: int = 2048
  max_len: int = 77
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  # 2 marks configs written before HF PR #24773: pool at argmax(ids), which is the end-of-text
  # token in OpenAI's vocabulary (its highest id). Otherwise pool at the first eos_token_id.
  eos_token_id: int = 2
  attn_dropout_rate: float = 0.0


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
  vision: CLIPVisionConfig = CLIPVisionConfig()
  text: CLIPTextConfig = CLIPTextConfig()
  projection_dim: int = 512
  logit_scale_init: float = math.log(1 / 0.07)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_hf_config(cls, d: Mapping[str, Any]) -> CLIPConfig:
    """From a HF `CLIPModel` config.json dict; absent fields take HF's defaults."""
    if d.get("model_type", "clip") != "clip":
      raise WeightImportError(
        f"config model_type is {d.get('model_type')!r}; expected 'clip' (a CLIPModel folder)"
      )
    v = {**(d.get("vision_config") or {}), **(d.get("vision_config_dict") or {})}
    t = {**(d.get("text_config") or {}), **(d.get("text_config_dict") or {})}
    image = v.get("image_size", 224)
    image = (image, image) if isinstance(image, int) else tuple(image)
    patch = v.get("patch_size", 32)
    if not isinstance(patch, int):
      if len(set(patch)) != 1:
        raise WeightImportError(
          f"vision_config.patch_size {patch} is not square; CLIP uses square ones"
        )
      patch = patch[0]
    eos = t.get("eos_token_id", 49407)
    if not isinstance(eos, int):
      raise WeightImportError(f"text_config.eos_token_id must be one integer, got {eos!r}")
    vision = CLIPVisionConfig(
      hidden_size=v.get("hidden_size", 768),
      num_layers=v.get("num_hidden_layers", 12),
      num_heads=v.get("num_attention_heads", 12),
      mlp_dim=v.get("intermediate_size", 3072),
      patch_size=patch,
      image_size=image,
      num_channels=v.get("num_channels", 3),
      hidden_act=v.get("hidden_act", "quick_gelu"),
      layer_norm_eps=v.get("layer_norm_eps", 1e-5),
      attn_dropout_rate=float(v.get("attention_dropout", 0.0)),
    )
    text = CLIPTextConfig(
      vocab_size=t.get("vocab_size", 49408),
      hidden_size=t.get("hidden_size", 512),
      num_layers=t.get("num_hidden_layers", 12),
      num_heads=t.get("num_attention_heads", 8),
      mlp_dim=t.get("intermediate_size", 2048),
      max_len=t.get("max_position_embeddings", 77),
      hidden_act=t.get("hidden_act", "quick_gelu"),
      layer_norm_eps=t.get("layer_norm_eps", 1e-5),
      eos_token_id=eos,
      attn_dropout_rate=float(t.get("attention_dropout", 0.0)),
    )
    return cls(
      vision=vision,
      text=text,
      projection_dim=d.get("projection_dim", 512),
      logit_scale_init=d.get("logit_scale_init_value", 2.6592),
    )


def _fields(cls: type, d: Mapping[str, Any], where: str) -> dict[str, Any]:
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(d) - known)
  if unknown:
    raise errors.ConfigError(f"unknown {where} fields {unknown}; known: {sorted(known)}")
  return dict(d)


def config_from_dict(d: Mapping[str, Any]) -> CLIPConfig:
  """Inverse of `CLIPConfig.to_dict` (e.g. the JSON saved beside a converted checkpoint)."""
  top = _fields(CLIPConfig, d, "CLIPConfig")
  vision = CLIPVisionConfig(**_fields(CLIPVisionConfig, top.pop("vision", {}), "CLIPVisionConfig"))
  text = CLIPTextConfig(**_fields(CLIPTextConfig, top.pop("text", {}), "CLIPTextConfig"))
  return CLIPConfig(vision=vision, text=text, **top)


def vit_b16(image_size: tuple[int, int] = (224, 224)) -> CLIPConfig:
  """openai/clip-vit-base-patch16 (its config.json still has the legacy eos_token_id 2)."""
  return CLIPConfig(vision=CLIPVisionConfig(image_size=tuple(image_size)), text=CLIPTextConfig())


# ----------------------------------------------------------------------------- modules


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] torch-bicubic weights: resizing is linear, so resize the identity."""
  return resize_grid(np.eye(n_in)[:, None, :], (n_out, 1), "bicubic")[:, 0, :]


def interpolate_pos_embedding(
  pos: jax.Array, src_grid: tuple[int, int], dst_grid: tuple[int, int]
) -> jax.Array:
  """[1 + h*w, D] -> [1 + h'*w', D], bicubic like torch / HF `interpolate_pos_encoding`."""
  if tuple(src_grid) == tuple(dst_grid):
    return pos
  wh = jnp.asarray(_resize_matrix(src_grid[0], dst_grid[0]), pos.dtype)
  ww = jnp.asarray(_resize_matrix(src_grid[1], dst_grid[1]), pos.dtype)
  patches = pos[1:].reshape(src_grid[0], src_grid[1], -1)
  patches = jnp.einsum("oh,hwd,pw->opd", wh, patches, ww, precision="highest")
  return jnp.concatenate([pos[:1], patches.reshape(-1, pos.shape[-1])], axis=0)


class CLIPVisionTower(nn.Module):
  """HF CLIPVisionModel + visual_projection."""

  config: CLIPVisionConfig
  projection_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *, camera: jax.Array | None = None,
               project_tokens: bool = False, deterministic: bool = True
               ) -> dict[str, jax.Array]:
    """`camera` [B] ids when `num_cameras` > 0; `project_tokens` also returns every token
    through the post-norm and the projection ("token_embeddings" [B, 1 + N, P])."""
    c = self.config
    if images.ndim != 4 or images.shape[-1] != c.num_channels:
      raise ValueError(f"images must be [B, H, W, {c.num_channels}] (NHWC), got {images.shape}")
    p, s, d = c.patch_size, c.patch_stride, c.hidden_size
    x = nn.Conv(
      d, (p, p), strides=(s, s), padding="VALID", use_bias=False, dtype=self.dtype,
      kernel_init=nn.initializers.normal(0.02), name="patch_embed",
    )(images.astype(self.dtype))
    b, gh, gw, _ = x.shape
    cls = self.param("class_embedding", nn.initializers.normal(d**-0.5), (d,))
    pos = self.param(
      "pos_embedding", nn.initializers.normal(0.02), (1 + c.grid[0] * c.grid[1], d)
    )
    pos = interpolate_pos_embedding(pos, c.grid, (gh, gw))
    cls = jnp.broadcast_to(cls.astype(self.dtype), (b, 1, d))
    x = jnp.concatenate([cls, x.reshape(b, gh * gw, d)], axis=1) + pos.astype(self.dtype)
    if c.num_cameras:
      table = self.param("camera_embed", nn.initializers.truncated_normal(0.02),
                         (c.num_cameras, d))
      # Unknown camera (test-time features): the mean embedding, as in models/vit.py.
      side = table.mean(axis=0, keepdims=True) if camera is None else table[camera]
      x = x + side[:, None, :].astype(self.dtype)
    norm = lambda name: nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name=name)
    x = norm("pre_norm")(x)
    for i in range(c.num_layers):
      x = PreNormBlock(
        c.num_heads, c.mlp_dim, c.hidden_act, c.layer_norm_eps,
        attn_dropout_rate=c.attn_dropout_rate,
        drop_path_rate=c.drop_path_rate * i / max(c.num_layers - 1, 1),
        dtype=self.dtype, name=f"block_{i}",
      )(x, deterministic=deterministic)
    post_norm = norm("post_norm")
    projection = nn.Dense(self.projection_dim, use_bias=False, dtype=self.dtype,
                          name="projection")
    cls_out = post_norm(x[:, 0])
    out = {"cls": cls_out, "patch_tokens": x[:, 1:], "tokens": x,
           "embedding": projection(cls_out)}
    if project_tokens:  # LayerNorm and projection act per token: row 0 is `embedding`
      out["token_embeddings"] = projection(post_norm(x))
    return out


def eos_positions(ids: jax.Array, eos_token_id: int) -> jax.Array:
  """Where HF CLIPTextModel pools: argmax(ids) for legacy eos 2, else the first eos_token_id."""
  if eos_token_id == 2:
    return jnp.argmax(ids, axis=-1)
  return jnp.argmax((ids == eos_token_id).astype(jnp.int32), axis=-1)


class CLIPTextTower(nn.Module):
  """HF CLIPTextModel + text_projection."""

  config: CLIPTextConfig
  projection_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self, ids: jax.Array, mask: jax.Array | None = None, *,
    inject: tuple[jax.Array, jax.Array] | None = None, deterministic: bool = True
  ) -> dict[str, jax.Array]:
    """`inject` = (positions [B], vectors [B, hidden]): those token embeddings are replaced
    before the position embeddings are added (a pseudo-word, as in textual inversion)."""
    c = self.config
    if ids.ndim != 2 or ids.shape[1] > c.max_len:
      error = ValueError if ids.ndim != 2 else errors.ConfigError  # too long: config.max_text_len
      raise error(f"ids must be [B, L] with L <= {c.max_len}, got {ids.shape}")
    x = nn.Embed(
      c.vocab_size, c.hidden_size, embedding_init=nn.initializers.normal(0.02),
      dtype=self.dtype, name="token_embed",
    )(ids)
    if inject is not None:
      where, vectors = inject
      x = x.at[jnp.arange(x.shape[0]), where].set(vectors.astype(x.dtype))
    pos = self.param("pos_embedding", nn.initializers.normal(0.01), (c.max_len, c.hidden_size))
    x = x + pos[: ids.shape[1]].astype(self.dtype)
    attn_mask = None if mask is None else padding_mask(mask)
    for i in range(c.num_layers):
      x = PreNormBlock(
        c.num_heads, c.mlp_dim, c.hidden_act, c.layer_norm_eps,
        attn_dropout_rate=c.attn_dropout_rate, dtype=self.dtype, name=f"block_{i}",
      )(x, mask=attn_mask, causal=True, deterministic=deterministic)
    x = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name="final_norm")(x)
    pooled = x[jnp.arange(x.shape[0]), eos_positions(ids, c.eos_token_id)]
    embedding = nn.Dense(
      self.projection_dim, use_bias=False, dtype=self.dtype, name="projection"
    )(pooled)
    return {"tokens": x, "pooled": pooled, "embedding": embedding}


def clip_logits(
  image_embedding: jax.Array, text_embedding: jax.Array, logit_scale: jax.Array
) -> jax.Array:
  """exp(logit_scale) * cosine similarity, [num_images, num_texts], in float32."""
  img = l2_normalize(image_embedding.astype(jnp.float32))
  txt = l2_normalize(text_embedding.astype(jnp.float32))
  return jnp.exp(logit_scale) * img @ txt.T


class CLIP(nn.Module):
  """Both towers and the learned temperature; params: vision, text, logit_scale."""

  config: CLIPConfig
  dtype: Dtype = jnp.float32

  def setup(self):
    c = self.config
    self.vision = CLIPVisionTower(c.vision, c.projection_dim, self.dtype)
    self.text = CLIPTextTower(c.text, c.projection_dim, self.dtype)
    self.logit_scale = self.param(
      "logit_scale", nn.initializers.constant(c.logit_scale_init), (), jnp.float32
    )

  def encode_image(self, images: jax.Array, *, deterministic: bool = True) -> dict[str, jax.Array]:
    return self.vision(images, deterministic=deterministic)

  def encode_text(
    self, ids: jax.Array, mask: jax.Array | None = None, *, deterministic: bool = True
  ) -> dict[str, jax.Array]:
    return self.text(ids, mask, deterministic=deterministic)

  def __call__(
    self,
    images: jax.Array,
    ids: jax.Array,
    mask: jax.Array | None = None,
    *,
    deterministic: bool = True,
  ) -> dict[str, Any]:
    image = self.encode_image(images, deterministic=deterministic)
    text = self.encode_text(ids, mask, deterministic=deterministic)
    logits = clip_logits(image["embedding"], text["embedding"], self.logit_scale)
    return {
      "image": image,
      "text": text,
      "logits_per_image": logits,
      "logits_per_text": logits.T,
      "logit_scale": self.logit_scale,
    }


def abstract_params(config: CLIPConfig) -> dict[str, Any]:
  """Param shapes/dtypes of `CLIP(config)` without allocating them."""
  v = config.vision
  images = jnp.zeros((1, *v.image_size, v.num_channels), jnp.float32)
  ids = jnp.zeros((1, config.text.max_len), jnp.int32)
  init = lambda: CLIP(config).init(jax.random.PRNGKey(0), images, ids)
  return jax.eval_shape(init)["params"]


# ----------------------------------------------------------------------------- weight import


def _block_rules(ours: str, theirs: str) -> list[Rule]:
  """One pre-norm encoder layer: HF `CLIPEncoderLayer` -> layers.PreNormBlock."""
  rows = [
    ("norm1/scale", "layer_norm1.weight", identity),
    ("norm1/bias", "layer_norm1.bias", identity),
    ("attn/query/kernel", "self_attn.q_proj.weight", linear),
    ("attn/query/bias", "self_attn.q_proj.bias", identity),
    ("attn/key/kernel", "self_attn.k_proj.weight", linear),
    ("attn/key/bias", "self_attn.k_proj.bias", identity),
    ("attn/value/kernel", "self_attn.v_proj.weight", linear),
    ("attn/value/bias", "self_attn.v_proj.bias", identity),
    ("attn/out/kernel", "self_attn.out_proj.weight", linear),
    ("attn/out/bias", "self_attn.out_proj.bias", identity),
    ("norm2/scale", "layer_norm2.weight", identity),
    ("norm2/bias", "layer_norm2.bias", identity),
    ("mlp/fc1/kernel", "mlp.fc1.weight", linear),
    ("mlp/fc1/bias", "mlp.fc1.bias", identity),
    ("mlp/fc2/kernel", "mlp.fc2.weight", linear),
    ("mlp/fc2/bias", "mlp.fc2.bias", identity),
  ]
  return [
    Rule(f"{ours}/block_{{i}}/{o}", f"{theirs}.encoder.layers.{{i}}.{t}", fn) for o, t, fn in rows
  ]


def clip_key_table(pos_transform=identity) -> list[Rule]:
  """HF `CLIPModel` safetensors -> `CLIP` params. `pos_transform` may resize the vision grid."""
  return [
    Rule("vision/patch_embed/kernel", "vision_model.embeddings.patch_embedding.weight", conv_oihw),
    Rule("vision/class_embedding", "vision_model.embeddings.class_embedding"),
    Rule(
      "vision/pos_embedding", "vision_model.embeddings.position_embedding.weight", pos_transform
    ),
    Rule("vision/pre_norm/scale", "vision_model.pre_layrnorm.weight"),  # sic: HF's spelling
    Rule("vision/pre_norm/bias", "vision_model.pre_layrnorm.bias"),
    *_block_rules("vision", "vision_model"),
    Rule("vision/post_norm/scale", "vision_model.post_layernorm.weight"),
    Rule("vision/post_norm/bias", "vision_model.post_layernorm.bias"),
    Rule("vision/projection/kernel", "visual_projection.weight", linear),
    Rule("text/token_embed/embedding", "text_model.embeddings.token_embedding.weight"),
    Rule("text/pos_embedding", "text_model.embeddings.position_embedding.weight"),
    *_block_rules("text", "text_model"),
    Rule("text/final_norm/scale", "text_model.final_layer_norm.weight"),
    Rule("text/final_norm/bias", "text_model.final_layer_norm.bias"),
    Rule("text/projection/kernel", "text_projection.weight", linear),
    Rule("logit_scale", "logit_scale"),
  ]


# Non-persistent buffers some older checkpoints still carry.
CLIP_IGNORE = (r"(vision|text)_model\.embeddings\.position_ids",)


def load_clip(
  path: str, *, image_size: tuple[int, int] | None = None, stride: int | None = None
) -> tuple[dict[str, Any], CLIPConfig]:
  """Reads a HF `CLIPModel` folder (config.json + safetensors) into `CLIP` params.

  Args:
    path: the folder (or its model.safetensors file).
    image_size: (H, W) to store the vision position embeddings for, e.g. (256, 128) for Re-ID
      crops; resized once here with torch's bicubic. None keeps the checkpoint's grid.
    stride: patch stride (< patch size: overlapping patches, a larger grid; not in HF CLIP).

  Returns:
    (params, config): the float32 "params" collection as nested numpy arrays, for
    `CLIP(config).apply({"params": params}, ...)`, and its config.

  Raises:
    WeightImportError: naming every missing, unexpected or wrongly shaped key.
  """
  tensors, hf_config = load_safetensors_dir(path)
  try:
    config = CLIPConfig.from_hf_config(hf_config)
  except ValueError as e:
    raise WeightImportError(f"{path}/config.json: {e}") from None
  src_grid = config.vision.grid
  vision = dataclasses.replace(
    config.vision,
    image_size=config.vision.image_size if image_size is None else tuple(image_size),
    stride=stride,
  )
  config = dataclasses.replace(config, vision=vision)
  pos_transform = identity
  if vision.grid != src_grid:
    pos_transform = resize_posemb(vision.grid, num_prefix=1, src_grid=src_grid)
  params = apply_key_table(
    clip_key_table(pos_transform),
    tensors,
    abstract_params(config),
    ignore=CLIP_IGNORE,
    table_name="clip",
    source_name=str(path),
  )
  return params, config


def convert_checkpoint(path: str, **options: Any) -> tuple[dict[str, Any], CLIPConfig]:
  """The `retext_jax.tools.convert --kind clip` entry point; options go to `load_clip`."""
  return load_clip(path, **options)
