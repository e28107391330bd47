"""Optimizer: AdamW (or SGD) with warm-up + cosine, per-group learning rates, decay masks, clipping.

Groups follow the usual Re-ID fine-tuning recipe: pretrained backbones (image and text encoders)
train at `lr`, newly initialised heads at `lr * head_lr_mult`. Biases, norms, embeddings and
tokens are not decayed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import optax
from absl import logging
from flax import traverse_util

from retext_jax import errors

BACKBONE = "backbone"
HEAD = "head"
FROZEN = "frozen"
_NO_DECAY = re.compile(r"(bias|scale|cls_token|pos_embedding|position_embed|token_type|norm|bn)")


def schedule(lr: float, total_steps: int, warmup_steps: int, end_factor: float = 0.0):
  """Linear warm-up from 0 then cosine decay to `lr * end_factor` at `total_steps`."""
  warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=lr, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=lr * end_factor,
  )


def param_groups(params, backbone_prefixes: tuple[str, ...], freeze: str = "",
                 lr_mults: Mapping[str, float] | None = None):
  """Labels each leaf FROZEN if its path matches the `freeze` regex, else its `lr_mults` prefix
  if it starts with one, else BACKBONE if it starts with one of `backbone_prefixes`, else HEAD.
  Paths look like "text_encoder/word_embeddings/..."."""
  frozen = re.compile(freeze) if freeze else None
  flat = traverse_util.flatten_dict(params, sep="/")

  def label(k: str) -> str:
    if frozen is not None and frozen.search(k):
      return FROZEN
    for prefix in lr_mults or {}:
      if k.startswith(prefix):
        return prefix
    return BACKBONE if any(k.startswith(p) for p in backbone_prefixes) else HEAD

  labels = {k: label(k) for k in flat}
  unused = sorted(set(lr_mults or {}) - set(labels.values()))
  if unused:  # e.g. a text tower switched off by another key: a typo shows here as well
    logging.warning("config.optim.lr_mults: no parameter path starts with %s (ignored)", unused)
  return traverse_util.unflatten_dict(labels, sep="/")


def decay_mask(params):
  flat = traverse_util.flatten_dict(params, sep="/")
  mask = {k: getattr(v, "ndim", 0) > 1 and not _NO_DECAY.search(k.lower()) for k, v in flat.items()}
  return traverse_util.unflatten_dict(mask, sep="/")


def make_optimizer(cfg: Mapping, total_steps: int, backbone_prefixes: tuple[str, ...]):
  """Returns (optax transformation, {group: schedule}) for logging the learning rates.

  cfg keys: name ("adamw"|"sgd"), lr, head_lr_mult, weight_decay, warmup_steps, clip_norm,
  b1, b2, momentum (SGD), end_factor, freeze (regex of parameter paths left untouched: no
  update and no optimizer state, e.g. "word_embeddings" to keep a pretrained vocabulary),
  lr_mults ({parameter path prefix: multiplier of lr}, e.g. {"text_encoder": 0.1} to fine-tune a
  pretrained tower gently beside one trained from scratch).
  """
  lr_mults = dict(cfg.get("lr_mults") or {})
  clash = sorted(set(lr_mults) & {BACKBONE, HEAD, FROZEN})
  if clash:
    raise errors.ConfigError(f"config.optim.lr_mults: {clash} clash with the group names")
  mults = {BACKBONE: 1.0, HEAD: cfg["head_lr_mult"], **lr_mults}
  scheds = {g: schedule(cfg["lr"] * m, total_steps, cfg["warmup_steps"], cfg.get("end_factor", 0.0))
            for g, m in mults.items()}

  def one(sched):
    if cfg["name"] == "adamw":
      return optax.adamw(sched, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                         weight_decay=cfg["weight_decay"], mask=decay_mask)
    if cfg["name"] == "sgd":
      return optax.chain(
          optax.add_decayed_weights(cfg["weight_decay"], mask=decay_mask),
          optax.sgd(sched, momentum=cfg.get("momentum", 0.9), nesterov=True),
      )
    raise errors.ConfigError(f"config.optim.name={cfg['name']!r}: expected 'adamw' or 'sgd'")

  freeze = cfg.get("freeze", "")
  tx = optax.multi_transform(
      {**{g: one(s) for g, s in scheds.items()}, FROZEN: optax.set_to_zero()},
      lambda p: param_groups(p, backbone_prefixes, freeze, lr_mults),
  )
  if cfg.get("clip_norm"):
    tx = optax.chain(optax.clip_by_global_norm(cfg["clip_norm"]), tx)
  return tx, scheds

