"""BERT text encoder (post-norm), loadable from Hugging Face `BertModel` safetensors folders.

  config = BertConfig.from_hf_config(json.load(open(".../config.json")))
  out = Bert(config).apply({"params": params}, ids, attention_mask=mask)
  out["tokens"] [B, L, D], out["cls"] [B, D], out["pooled"] [B, D] when config.pooler

Params: word_embeddings, position_embeddings, token_type_embeddings (nn.Embed), embed_norm,
layer_{i} (layers.PostNormBlock), pooler (Dense).
`convert_checkpoint(path)` imports bert-base-uncased, all-MiniLM-L6-v2 and `bert.`-prefixed
BertForXxx checkpoints (task heads are dropped).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from retext_jax import errors
from retext_jax.models import layers
from retext_jax.models import weights as W
from retext_jax.models.configs import DictConfig


@dataclasses.dataclass(frozen=True)
class BertConfig(DictConfig):
  """BERT hyper-parameters, named as in our modules (HF names are mapped by from_hf_config)."""

  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  activation: str = "gelu"
  layer_norm_eps: float = 1e-12
  dropout_rate: float = 0.1
  attn_dropout_rate: float = 0.1
  pooler: bool = True  # Dense + tanh on [CLS] (HF BertPooler)

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise errors.ConfigError(
        f"hidden_size {self.hidden_size} not divisible by {self.num_heads} heads"
      )

  @classmethod
  def from_hf_config(cls, hf: dict[str, Any], **overrides: Any) -> BertConfig:
    """From an HF BERT `config.json` dict; absolute position embeddings only."""
    kind = hf.get("position_embedding_type", "absolute")
    if kind != "absolute":
      raise W.WeightImportError(
        f"position_embedding_type {kind!r} is not supported (only 'absolute')"
      )
    fields = dict(
      vocab_size=hf["vocab_size"],
      hidden_size=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"],
      num_heads=hf["num_attention_heads"],
      intermediate_size=hf["intermediate_size"],
      max_position_embeddings=hf.get("max_position_embeddings", 512),
      type_vocab_size=hf.get("type_vocab_size", 2),
      activation=hf.get("hidden_act", "gelu"),
      layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
      dropout_rate=hf.get("hidden_dropout_prob", 0.1),
      attn_dropout_rate=hf.get("attention_probs_dropout_prob", 0.1),
    )
    return cls(**{**fields, **overrides})


def config_from_dict(d: dict[str, Any]) -> BertConfig:
  return BertConfig.from_dict(d)


class Bert(nn.Module):
  """BERT encoder: embeddings + LayerNorm, post-norm layers, optional pooler."""

  config: BertConfig
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(
    self,
    input_ids: jax.Array,
    attention_mask: jax.Array | None = None,
    token_type_ids: jax.Array | None = None,
    *,
    train: bool = False,
  ) -> dict[str, jax.Array]:
    cfg = self.config
    length = input_ids.shape[1]
    if length > cfg.max_position_embeddings:
      raise errors.ConfigError(
        f"sequence length {length} > max_position_embeddings {cfg.max_position_embeddings}"
      )
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    embed = lambda n, name: nn.Embed(
      n, cfg.hidden_size, embedding_init=nn.initializers.normal(0.02), dtype=self.dtype, name=name
    )
    x = embed(cfg.vocab_size, "word_embeddings")(input_ids)
    x = x + embed(cfg.max_position_embeddings, "position_embeddings")(jnp.arange(length))[None]
    x = x + embed(cfg.type_vocab_size, "token_type_embeddings")(token_type_ids)
    x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=self.dtype, name="embed_norm")(x)
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)
    mask = None if attention_mask is None else layers.padding_mask(attention_mask)
    for i in range(cfg.num_layers):
      x = layers.PostNormBlock(
        num_heads=cfg.num_heads,
        mlp_dim=cfg.intermediate_size,
        activation=cfg.activation,
        layer_norm_eps=cfg.layer_norm_eps,
        dropout_rate=cfg.dropout_rate,
        attn_dropout_rate=cfg.attn_dropout_rate,
        dtype=self.dtype,
        name=f"layer_{i}",
      )(x, mask=mask, deterministic=not train)
    out = {"tokens": x, "cls": x[:, 0]}
    if cfg.pooler:
      out["pooled"] = jnp.tanh(nn.Dense(cfg.hidden_size, dtype=self.dtype, name="pooler")(x[:, 0]))
    return out


# ----------------------------------------------------------------------------- weight import


def abstract_params(config: BertConfig) -> dict[str, Any]:
  """The params tree as ShapeDtypeStructs (no allocation)."""
  ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  return jax.eval_shape(Bert(config).init, jax.random.key(0), ids)["params"]


def hf_rules() -> list[W.Rule]:
  """HF `BertModel` keys -> our params."""
  lyr = "encoder.layer.{i}."
  rules = [
    W.Rule(f"{name}/embedding", f"embeddings.{name}.weight")
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")
  ]
  rules += [
    W.Rule("embed_norm/scale", "embeddings.LayerNorm.weight"),
    W.Rule("embed_norm/bias", "embeddings.LayerNorm.bias"),
    W.Rule("pooler/kernel", "pooler.dense.weight", W.linear),
    W.Rule("pooler/bias", "pooler.dense.bias"),
  ]
  for ours, theirs in [
    ("attn/query", "attention.self.query"),
    ("attn/key", "attention.self.key"),
    ("attn/value", "attention.self.value"),
    ("attn/out", "attention.output.dense"),
    ("mlp/fc1", "intermediate.dense"),
    ("mlp/fc2", "output.dense"),
  ]:
    rules += [
      W.Rule(f"layer_{{i}}/{ours}/kernel", f"{lyr}{theirs}.weight", W.linear),
      W.Rule(f"layer_{{i}}/{ours}/bias", f"{lyr}{theirs}.bias"),
    ]
  for ours, theirs in [
    ("attn_norm", "attention.output.LayerNorm"),
    ("mlp_norm", "output.LayerNorm"),
  ]:
    rules += [
      W.Rule(f"layer_{{i}}/{ours}/scale", f"{lyr}{theirs}.weight"),
      W.Rule(f"layer_{{i}}/{ours}/bias", f"{lyr}{theirs}.bias"),
    ]
  return rules


# Buffers and task heads of BertForPreTraining / MaskedLM / SequenceClassification ...
_HF_IGNORE = (
  r"(bert\.)?embeddings\.position_ids",
  r"cls\..*",
  r"classifier\..*",
  r"qa_outputs\..*",
)


def convert_checkpoint(path: str, **overrides: Any) -> tuple[dict[str, Any], BertConfig]:
  """Imports an HF BERT folder; the pooler is kept when the checkpoint has one."""
  tensors, hf = W.load_safetensors_dir(path)
  prefix = W.detect_prefix(tensors, "embeddings.word_embeddings.weight", ("", "bert."))
  pooler = prefix + "pooler.dense.weight" in tensors
  try:
    config = BertConfig.from_hf_config(hf, **{"pooler": pooler, **overrides})
  except KeyError as e:
    raise W.WeightImportError(
      f"{path}/config.json (model_type {hf.get('model_type')!r}) lacks {e.args[0]!r}: "
      "not an HF BERT config; is the model kind right?"
    ) from None
  params = W.apply_key_table(
    hf_rules(),
    tensors,
    abstract_params(config),
    prefix=prefix,
    ignore=_HF_IGNORE,
    table_name="HF BertModel",
    source_name=os.fspath(path),
  )
  return params, config
