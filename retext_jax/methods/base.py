"""The method interface: everything the generic trainer, evaluators and tools ask of a method.

A method (ReText, the BoT baseline, ...) owns its Flax module, its loss and what it offers at
test time, in the spirit of scenic's `BaseModel`. It is built two ways:

* `create(config, data)` for training: reads the pretrained init files the config names and
  returns the method, the pretrained parameters to load and the tokenizer (or None);
* `restore(config, model_dict)` from a checkpoint's metadata: reads nothing else, so a workdir
  works after the training data and the init files are gone.

The trainer (`retext_jax.train`) names no method: it calls `stages`, `init_variables`,
`extra_state`, `frozen_state`, `loss_fn`, reads `ema_keys` / `ema_decay` / `backbone_keys` /
`streams`, and evaluates through `predict_fns`. Imports without TensorFlow.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from retext_jax import errors

# Names of the functions `predict_fns` may offer; each takes (variables, *inputs).
REID = "reid"  # images [B, H, W, 3] -> Re-ID feature [B, D]
IMAGE_EMBED = "image_embed"  # images -> image-text matching embedding [B, E]
TEXT_EMBED = "text_embed"  # tokens [T, L], token_mask [T, L] -> matching embedding [T, E]
RECONSTRUCT = "reconstruct"  # images, tokens, token_mask, patch_mask -> patch pixels [B, N, P]

# Input streams of the train pipeline a method may read (batch keys "<stream>/...").
MULTICAM, SINGLECAM = "multicam", "singlecam"
# The multi-camera stream with one of each image's captions (multicam/tokens, token_mask).
MULTICAM_TEXT = "multicam_text"


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What a method may know about its training data when it builds its model."""

  num_classes: int  # identities of the multi-camera sources (one classifier over all)
  num_sc_classes: int = 0  # identities of the captioned single-camera sources
  num_cameras: int = 0  # cameras of the multi-camera sources (camera embeddings)
  multicam_captioned: float = 0.0  # share of multi-camera training images with a caption


@dataclasses.dataclass
class Init:
  """What `Method.create` returns: the method, pretrained params to load, and the tokenizer."""

  method: Method
  pretrained: dict  # {top-level param key: subtree}; merged into the initial params
  tokenizer: Any = None  # retext_jax.tokenizers.TextTokenizer of a text tower, or None


class Method(abc.ABC):
  """One method: module, loss, extra train state and test-time functions.

  `config` is the run's ConfigDict (or the one saved with a checkpoint); `model_config` the
  JSON-able description of the module saved in checkpoint metadata (`to_dict` / `from_dict`).
  """

  name: ClassVar[str]
  model_config_cls: ClassVar[type]

  def __init__(self, config: Mapping[str, Any], model_config: Any):
    self.config = config
    self.model_config = model_config
    self.model = self.make_module()
    self._jitted: dict[str, Callable] = {}

  # ------------------------------------------------------------------------------- building

  @classmethod
  @abc.abstractmethod
  def create(cls, config: Mapping[str, Any], data: DataInfo) -> Init:
    """The method for training on `data`, with its pretrained weights and tokenizer."""

  @classmethod
  def restore(cls, config: Mapping[str, Any], model_dict: Mapping[str, Any]) -> Method:
    """The method described by a checkpoint's metadata (no data, no init files)."""
    return cls(config, cls.model_config_cls.from_dict(dict(model_dict)))

  @classmethod
  def fit_to_data(cls, config: Mapping[str, Any], data: DataInfo
                  ) -> tuple[dict[str, Any], str]:
    """({dotted config key: value}, why) that fit the config to training data lacking a stream
    it would read (ReText without captioned images: its text losses off), applied by the
    trainer before `create` with a one-line notice; ({}, "") when nothing is missing. What a
    method cannot do without is left to the trainer's check, an error naming the stream."""
    del config, data
    return {}, ""

  @classmethod
  def stages(cls, config: Mapping[str, Any], workdir: str) -> list[tuple[str, Any]]:
    """(workdir, config) of each training stage, run in order by one command (LCR²S: teacher,
    then student). Each stage resumes from its own checkpoints; a finished one is skipped."""
    return [(workdir, config)]

  @abc.abstractmethod
  def make_module(self):
    """The Flax module for `self.model_config` and `self.config.model.dtype`."""

  @abc.abstractmethod
  def init_inputs(self) -> tuple:
    """Dummy positional inputs of `self.model.__call__`, which touches every parameter."""

  def init_variables(self, rng: jax.Array) -> dict:
    return self.model.init({"params": rng, "dropout": rng}, *self.init_inputs(), train=False)

  @property
  def dtype(self) -> jnp.dtype:
    return jnp.dtype(self.config["model"]["dtype"])

  # ------------------------------------------------------------------------------- training

  @property
  @abc.abstractmethod
  def streams(self) -> tuple[str, ...]:
    """Train input streams this method reads (MULTICAM or MULTICAM_TEXT, SINGLECAM)."""

  ema_keys: ClassVar[tuple[str, ...]] = ()  # top-level param subtrees the EMA copy tracks
  backbone_keys: ClassVar[tuple[str, ...]] = ()  # pretrained towers (the `lr` group; heads
  # train at lr * head_lr_mult)

  @property
  def ema_decay(self) -> float:
    return 0.0

  def extra_state(self) -> dict:
    """Train-state entries beyond params/batch_stats/ema/opt_state (e.g. a feature queue)."""
    return {}

  def frozen_state(self) -> dict:
    """Train-state entries the loss reads but nothing updates or checkpoints (a frozen teacher
    read from its own workdir by `create`, again on resume); host arrays."""
    return {}

  @abc.abstractmethod
  def loss_fn(self, params: dict, state: Mapping[str, Any], batch: Mapping[str, jax.Array],
              rng: jax.Array) -> tuple[jax.Array, tuple[dict, dict]]:
    """(loss, (metrics, state updates)); updates replace state entries (batch_stats, queue).
    Metrics are named "loss/<term>"; the trainer adds loss/total, norms and learning rates."""

  # ------------------------------------------------------------------------------ test time

  @abc.abstractmethod
  def predict_fns(self) -> dict[str, Callable]:
    """{name: fn(variables, *inputs)} among REID, IMAGE_EMBED, TEXT_EMBED, RECONSTRUCT."""

  @functools.cached_property
  def offered(self) -> dict[str, Callable]:
    """`predict_fns()`, built once (the evaluators and tools ask for it per batch)."""
    return self.predict_fns()

  def jitted(self, name: str) -> Callable:
    """`offered[name]` under jax.jit, compiled once per input shape for this method."""
    if name not in self._jitted:
      if name not in self.offered:
        raise errors.ConfigError(f"the {self.name} model does not offer {name!r} (it offers: "
                                 f"{', '.join(self.offered)})")
      self._jitted[name] = jax.jit(self.offered[name])
    return self._jitted[name]

  def offers(self, name: str) -> bool:
    return name in self.offered

  def eval_variables(self, state: Mapping[str, Any], features: str = "student") -> dict:
    """Apply-variables of a train state (or restored subtree); `features="momentum"` swaps the
    EMA copy in for the parameters it tracks."""
    if features not in ("student", "momentum"):
      raise errors.ConfigError(
          f"config.eval.features must be 'student' or 'momentum', got {features!r}")
    params = state["params"]
    if features == "momentum":
      if not state.get("ema"):
        raise errors.ConfigError(f"config.eval.features='momentum': the {self.name} method "
                                 "keeps no EMA copy of its weights")
      params = {**params, **state["ema"]}
    return {"params": params, "batch_stats": state.get("batch_stats", {})}

