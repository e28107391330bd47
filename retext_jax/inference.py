"""A trained ReText restored from its workdir: image features, text embeddings, reconstructions.

    trained = inference.load("workdirs/demo")          # or which="best"
    feats = trained.image_features(images)             # [B, D], L2-normalised (the Re-ID feature)
    txt = trained.text_embeddings(["a man in a red jacket"])  # matching space, L2-normalised

Everything needed is in the workdir: the model config is saved with each checkpoint and the
tokenizer is copied to `<workdir>/tokenizer`, so neither the training data nor the pretrained
init files must still exist. Images are float32 [B, H, W, 3] in the pipeline's layout (resized,
normalised: see `preprocessing`). Imports without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from retext_jax import checkpointing, tokenizers
from retext_jax.models.retext import ReText, ReTextConfig

TOKENIZER_DIR = "tokenizer"  # under the workdir
FEATURE_KINDS = ("reid", "matching")  # Re-ID feature | image-text matching embedding


def eval_variables(state: Mapping[str, Any], features: str = "student") -> dict:
  """Apply-variables of a train state (or restored subtree); `features="momentum"` swaps the EMA
  image encoder and projection in for the student's."""
  if features not in ("student", "momentum"):
    raise ValueError(f"config.eval.features must be 'student' or 'momentum', got {features!r}")
  params = state["params"]
  if features == "momentum":
    params = {**params, **state["ema"]}
  return {"params": params, "batch_stats": state["batch_stats"]}


def _normalize(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def preprocessing(config: Mapping[str, Any]) -> dict[str, Any]:
  """How images must be prepared for the extractor (mirrors `input_pipeline.eval_pipeline`)."""
  h, w = config["input"]["image_size"]
  return {
      "image_size": [int(h), int(w)],
      "resize": "decode as RGB uint8, then tf.image.resize(bilinear, antialias=False) to "
                "image_size, as float32 in [0, 255] (input_pipeline.augment.resize)",
      "normalize": "x / 255, minus mean, divided by std, per RGB channel",
      "mean": [float(m) for m in config["input"]["mean"]],
      "std": [float(s) for s in config["input"]["std"]],
      "layout": "NHWC float32",
      "output": "L2-normalised feature; compare with cosine similarity (dot product)",
  }


@dataclasses.dataclass
class TrainedModel:
  """A ReText and its variables (student or momentum image encoder, per `config.eval`)."""

  model: ReText
  variables: dict
  config: ml_collections.ConfigDict
  step: int
  workdir: str

  @property
  def image_size(self) -> tuple[int, int]:
    return tuple(self.config.input.image_size)

  @property
  def has_text(self) -> bool:
    return self.model.config.text is not None

  @functools.cached_property
  def tokenizer(self) -> tokenizers.TextTokenizer:
    self._require_text()
    path = os.path.join(self.workdir, TOKENIZER_DIR)
    if not os.path.isdir(path):
      raise FileNotFoundError(f"{path} does not exist: the workdir holds no tokenizer")
    return tokenizers.load_tokenizer(path, "bert")

  @functools.cached_property
  def _fns(self) -> dict:
    model, neck = self.model, self.config.eval.neck
    features = lambda v, x: _normalize(model.apply(v, x, neck, method=ReText.features))
    image_emb = lambda v, x: _normalize(model.apply(v, x, method=ReText.embed_image)["emb"])
    text_emb = lambda v, t, m: _normalize(model.apply(v, t, m, method=ReText.embed_text)["emb"])

    def reconstruct(v, x, t, m, patch_mask):
      states = model.apply(v, t, m, method=ReText.embed_text)["states"]
      return model.apply(v, x, patch_mask, states, m, method=ReText.reconstruct)

    return {k: jax.jit(f) for k, f in (("features", features), ("image_emb", image_emb),
                                       ("text_emb", text_emb), ("reconstruct", reconstruct))}

  def features_fn(self):
    """The jitted `(variables, images) -> features` (what `tools.export` serialises)."""
    return self._fns["features"]

  def image_features(self, images: np.ndarray) -> np.ndarray:
    """Re-ID retrieval features [B, D] (after or before the BNNeck, per `config.eval.neck`)."""
    return np.asarray(self._fns["features"](self.variables, jnp.asarray(images, jnp.float32)))

  def image_embeddings(self, images: np.ndarray) -> np.ndarray:
    """Image-text matching embeddings [B, E] of images."""
    self._require_text()
    return np.asarray(self._fns["image_emb"](self.variables, jnp.asarray(images, jnp.float32)))

  def encode_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    return self.tokenizer.encode(list(texts), self.config.input.max_text_len)

  def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
    """Image-text matching embeddings [T, E] of descriptions."""
    return self.token_embeddings(*self.encode_texts(texts))

  def token_embeddings(self, tokens: np.ndarray, token_mask: np.ndarray) -> np.ndarray:
    """Image-text matching embeddings [T, E] of tokenised descriptions ([T, L] ids and mask)."""
    self._require_text()
    return np.asarray(self._fns["text_emb"](self.variables, tokens, token_mask))

  def reconstruct(self, images: np.ndarray, texts: Sequence[str], patch_mask: np.ndarray
                  ) -> np.ndarray:
    """Predicted pixels [B, N, p*p*3] (normalised space) of every patch, from the visible
    patches (`patch_mask` True = masked) and the caption."""
    if not self.model.config.use_rec:
      raise ValueError(f"the model in {self.workdir} has no reconstruction decoder "
                       "(trained with lambda_rec=0)")
    tokens, mask = self.encode_texts(texts)
    return np.asarray(self._fns["reconstruct"](self.variables, jnp.asarray(images, jnp.float32),
                                               tokens, mask, jnp.asarray(patch_mask, bool)))

  def embed_records(self, records: Sequence[Any], kind: str = "reid", batch_size: int = 64,
                    progress: str | None = None):
    """`evaluators.Features` of dataset records, read by the evaluation pipeline (TensorFlow);
    `kind` "reid" (image_features) or "matching" (image_embeddings)."""
    from retext_jax import data, evaluators

    if kind not in FEATURE_KINDS:
      raise ValueError(f"feature kind must be one of {FEATURE_KINDS}, got {kind!r}")
    fn = self.image_features if kind == "reid" else self.image_embeddings
    return evaluators.Features.of(fn, list(records), data.input_config(self.config), batch_size,
                                  progress)

  def _require_text(self) -> None:
    if not self.has_text:
      raise ValueError(f"the model in {self.workdir} has no text encoder (trained without text)")


def load(workdir: str, which: str = "latest", step: int | None = None) -> TrainedModel:
  """Restores the model of a training workdir (checkpoint `which` = "latest" or "best")."""
  variables, meta = checkpointing.restore_variables(workdir, which, step)
  if "model" not in meta:
    raise ValueError(f"the {which} checkpoint in {workdir} predates saved model configs; "
                     "retrain it with this version")
  config = ml_collections.ConfigDict(meta["config"])
  mcfg = ReTextConfig.from_dict(meta["model"])
  model = ReText(mcfg, dtype=jnp.dtype(config.model.dtype))
  return TrainedModel(model, eval_variables(variables, config.eval.features), config,
                      int(meta["step"]), os.path.abspath(workdir))
