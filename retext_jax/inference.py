"""A trained model restored from its workdir: Re-ID features, text embeddings, reconstructions.

    trained = inference.load("workdirs/demo")          # or which="best"
    feats = trained.image_features(["a.jpg", "b.png"])  # [B, D], L2-normalised (Re-ID feature)
    txt = trained.text_embeddings(["a man in a red jacket"])  # matching space, L2-normalised

Any method works: the checkpoint's metadata names the method and its model config, and the
tokenizer is copied to `<workdir>/tokenizer`, so neither the training data nor the pretrained
init files must still exist. What a model offers depends on its method (`trained.offers(...)`);
asking for something it lacks is a one-line error. `image_features` / `image_embeddings` take
what users have (file paths, PIL images, uint8 or float pixel arrays in 0..255 of any size) and
prepare them as the evaluation pipeline does (`retext_jax.preprocess`); the `*_normalized`
variants take the pipeline's own batches (resized, normalised: see `preprocessing`). Imports
without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from retext_jax import checkpointing, errors, methods, preprocess, sharding, tokenizers
from retext_jax.methods import base

TOKENIZER_DIR = "tokenizer"  # under the workdir
FEATURE_KINDS = ("reid", "matching")  # Re-ID feature | image-text matching embedding
_KIND_FN = {"reid": base.REID, "matching": base.IMAGE_EMBED}
_WHAT = {base.REID: "Re-ID features", base.IMAGE_EMBED: "image-text matching embeddings",
         base.TEXT_EMBED: "text embeddings", base.RECONSTRUCT: "reconstructions"}


def preprocessing(config: Mapping[str, Any]) -> dict[str, Any]:
  """How images must be prepared for the extractor (mirrors `input_pipeline.eval_pipeline`)."""
  h, w = config["input"]["image_size"]
  return {
      "image_size": [int(h), int(w)],
      "resize": "decode as RGB uint8, then tf.image.resize(bilinear, antialias=True) to "
                "image_size, clipped to [0, 255], as float32 (input_pipeline.augment.resize; "
                "retext_jax.preprocess.resize does the same without TensorFlow)",
      "normalize": "x / 255, minus mean, divided by std, per RGB channel",
      "mean": [float(m) for m in config["input"]["mean"]],
      "std": [float(s) for s in config["input"]["std"]],
      "layout": "NHWC float32",
      "output": "L2-normalised feature; compare with cosine similarity (dot product)",
  }


@dataclasses.dataclass
class TrainedModel:
  """A method's model and the variables it is evaluated with (student or EMA weights, per
  `config.eval.features`). The trainer builds one over its live state for evaluation, with
  `place` putting host batches onto its device mesh."""

  method: base.Method
  variables: dict
  config: ml_collections.ConfigDict
  step: int
  workdir: str
  text_tokenizer: tokenizers.TextTokenizer | None = None  # None: read from the workdir
  tokenizer_kind: str = "bert"  # of the files in <workdir>/tokenizer ("bert" or "clip")
  place: Callable[[np.ndarray], jax.Array] = jnp.asarray

  @property
  def image_size(self) -> tuple[int, int]:
    return tuple(self.config.input.image_size)

  @functools.cached_property
  def fingerprint(self) -> str:
    """A hash of the variables and the test-time options that shape the features: the same
    model gives the same fingerprint wherever its workdir lies, another step or run another."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(self.variables):
      h.update(jax.tree_util.keystr(path).encode())
      h.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
    h.update(json.dumps({k: self.config.eval.get(k) for k in ("features", "neck")}).encode())
    return h.hexdigest()[:16]

  def provenance(self) -> dict[str, Any]:
    """What a feature file records about the model that wrote it (`tools.extract`)."""
    prep = preprocessing(self.config)
    return {"workdir": self.workdir, "step": self.step, "method": self.method.name,
            "model": self.config.name, "fingerprint": self.fingerprint,
            "eval": {k: self.config.eval.get(k) for k in ("features", "neck")},
            "preprocessing": {k: prep[k] for k in ("image_size", "mean", "std")}}

  @property
  def has_text(self) -> bool:
    return self.offers(base.TEXT_EMBED)

  def offers(self, fn: str) -> bool:
    return self.method.offers(fn)

  @functools.cached_property
  def tokenizer(self) -> tokenizers.TextTokenizer:
    self._require(base.TEXT_EMBED)
    if self.text_tokenizer is not None:
      return self.text_tokenizer
    path = os.path.join(self.workdir, TOKENIZER_DIR)
    if not os.path.isdir(path):
      raise errors.MissingFileError(f"{path} does not exist: the workdir holds no tokenizer")
    return tokenizers.load_tokenizer(path, self.tokenizer_kind)

  def _call(self, fn: str, *inputs) -> np.ndarray:
    self._require(fn)
    placed = [self.place(np.asarray(x)) for x in inputs]
    out = self.method.jitted(fn)(self.variables, *placed)
    return sharding.host_rows(out, placed[0].sharding)

  def features_fn(self) -> Callable:
    """The un-jitted `(variables, images) -> Re-ID features` (what `tools.export` serialises:
    only the parameters it reads end up in the artifact)."""
    self._require(base.REID)
    return self.method.offered[base.REID]

  def prepare(self, images: Any) -> np.ndarray:
    """The model's input batch from paths, PIL images or 0..255 pixel arrays of any size
    (resized and normalised as the evaluation pipeline does)."""
    cfg = self.config.input
    return preprocess.prepare(images, cfg.image_size, cfg.mean, cfg.std)

  def image_features(self, images: Any) -> np.ndarray:
    """Re-ID retrieval features [B, D], L2-normalised, of images as users have them: file
    paths, PIL images, [H, W, 3] arrays or one [B, H, W, 3] array, pixels in 0..255 (uint8 or
    float), any size."""
    return self.image_features_normalized(self.prepare(images))

  def image_features_normalized(self, images: np.ndarray) -> np.ndarray:
    """Re-ID features of a batch already prepared: float32 [B, H, W, 3] at the model's image
    size, normalised with the config's mean and std (what the evaluation pipeline yields)."""
    return self._call(base.REID, self._checked_batch(images))

  def image_embeddings(self, images: Any) -> np.ndarray:
    """Image-text matching embeddings [B, E], L2-normalised; images as `image_features` takes."""
    return self.image_embeddings_normalized(self.prepare(images))

  def image_embeddings_normalized(self, images: np.ndarray) -> np.ndarray:
    """Matching embeddings of a prepared batch (as `image_features_normalized` takes)."""
    return self._call(base.IMAGE_EMBED, self._checked_batch(images))

  def _checked_batch(self, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (*self.image_size, 3):
      raise errors.DataError(
          f"a prepared batch must be [batch, {self.image_size[0]}, {self.image_size[1]}, 3], got "
          f"{images.shape}; image_features / image_embeddings take images of any size")
    return images

  def encode_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    return self.tokenizer.encode(list(texts), self.config.input.max_text_len)

  def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
    """Image-text matching embeddings [T, E] of descriptions, L2-normalised."""
    return self.token_embeddings(*self.encode_texts(texts))

  def token_embeddings(self, tokens: np.ndarray, token_mask: np.ndarray) -> np.ndarray:
    """Image-text matching embeddings [T, E] of tokenised descriptions ([T, L] ids and mask)."""
    return self._call(base.TEXT_EMBED, tokens, token_mask)

  def reconstruct(self, images: np.ndarray, texts: Sequence[str], patch_mask: np.ndarray
                  ) -> np.ndarray:
    """Predicted pixels [B, N, p*p*3] (normalised space) of every patch, from the visible
    patches (`patch_mask` True = masked) and the caption."""
    self._require(base.RECONSTRUCT)
    patch_mask = np.asarray(patch_mask, bool)
    want = self.method.model_config.num_masked
    if patch_mask.ndim != 2 or (patch_mask.sum(axis=1) != want).any():
      raise errors.DataError(f"reconstruct: patch_mask must be [batch, patches] with {want} "
                             "masked (True) patches per row, the model's count")
    tokens, mask = self.encode_texts(texts)
    return self._call(base.RECONSTRUCT, np.asarray(images, np.float32), tokens, mask,
                      patch_mask)

  def embed_records(self, records: Sequence[Any], kind: str = "reid", batch_size: int = 64,
                    progress: str | None = None):
    """`evaluators.Features` of dataset records, read by the evaluation pipeline (TensorFlow);
    `kind` "reid" (Re-ID features) or "matching" (image-text matching embeddings)."""
    from retext_jax import data, evaluators

    if kind not in FEATURE_KINDS:
      raise errors.ConfigError(f"feature kind must be one of {FEATURE_KINDS}, got {kind!r}")
    self._require(_KIND_FN[kind])
    fn = self.image_features_normalized if kind == "reid" else self.image_embeddings_normalized
    return evaluators.Features.of(fn, list(records), data.input_config(self.config), batch_size,
                                  progress)

  def _require(self, fn: str) -> None:
    if not self.offers(fn):
      offered = ", ".join(_WHAT.get(f, f) for f in self.method.offered)
      raise errors.ConfigError(
          f"the {self.method.name} model in {self.workdir} offers no {_WHAT.get(fn, fn)}; "
          f"it offers: {offered}")


def load(workdir: str, which: str = "latest", step: int | None = None,
         eval_options: Mapping[str, Any] | None = None) -> TrainedModel:
  """Restores the model of a training workdir (checkpoint `which` = "latest" or "best"),
  whatever its method, from the checkpoint alone. `eval_options` replace the checkpoint's
  `config.eval` (which features, which side of the BNNeck) when given."""
  variables, meta = checkpointing.restore_variables(workdir, which, step)
  if "model" not in meta:
    raise errors.ConfigError(f"the {which} checkpoint in {workdir} predates saved model "
                             "configs; retrain it with this version")
  config = ml_collections.ConfigDict(meta["config"])
  if eval_options is not None:
    config.eval = dict(eval_options)
  method = methods.get(meta.get("method", "retext")).restore(config, meta["model"])
  return TrainedModel(method, method.eval_variables(variables, config.eval.features), config,
                      int(meta["step"]), os.path.abspath(workdir),
                      tokenizer_kind=meta.get("tokenizer_kind") or "bert")
