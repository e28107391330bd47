"""tf.data training pipelines: record lists in, the numpy batches the trainer consumes out.

Evaluation pipelines (ordered, unaugmented) are in `eval_pipeline.py`.

Train batches (per host; every key below `multicam/` or `singlecam/` is present only when that
part has sources):

  multicam/image      float32 [P*K, H, W, 3]  augmented, normalised; identity-major (K per id)
  multicam/pid        int32   [P*K]
  multicam/camid      int32   [P*K]
  multicam/record     int32   [P*K]           position of the record in the sources (an identity
                                              with fewer than K images repeats one: LCR²S's
                                              support sets tell copies apart by it)
  multicam/tokens     int32   [P*K, L]        with multicam_captions: one caption of each image,
  multicam/token_mask int32   [P*K, L]        drawn per step (CLIP-SCGI)
  singlecam/view1     float32 [B, H, W, 3]    two independently augmented views of one image
  singlecam/view2     float32 [B, H, W, 3]
  singlecam/pid       int32   [B]             identity of the image's caption set
  singlecam/tokens    int32   [B, L]          one of the image's captions, drawn per step
  singlecam/token_mask int32  [B, L]
  singlecam/patch_mask bool   [B, N]          True = masked; exactly round(mask_ratio * N) per row

Which records form a batch is decided in numpy (`sampling.py`: PK identities, weighted source
mixing, epochs); tf.data reads, decodes and augments them in parallel with stateless seeds, so a
seed fixes every batch. Captions are tokenised once, up front.

Several hosts: every host draws the same global batch (record positions, caption choices, patch
masks, augmentation seeds) and loads only its own contiguous rows of it, host h rows
[h*n/H, (h+1)*n/H). The global batch of a step is therefore the same on any number of hosts.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from input_pipeline import augment, images, masking, sampling
from input_pipeline.records import Record
from retext_jax import errors

if TYPE_CHECKING:
  from retext_jax.tokenizers import TextTokenizer

try:  # TF must never take accelerator memory away from JAX (big_vision does the same).
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # devices already initialised by an earlier TF user in this process
  pass

Sources = Sequence[tuple[Sequence[Record], float]]
Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """Everything the train/eval pipelines need. Batch sizes are global (all hosts together).

  Attributes:
    image_size: (height, width) after resizing.
    mean, std: per-channel normalisation of [0, 1] pixels (ImageNet default; CLIP: augment.CLIP_*).
    hflip_prob: horizontal flip probability.
    pad: zero padding before the random crop back to `image_size` (0 = off).
    erase_prob, erase_area, erase_aspect, erase_fill: random erasing of multi-camera images
      (torchreid defaults; fill "mean" or "random").
    singlecam_erase_prob: random erasing of the captioned views; off by default because erased
      pixels would become targets of the masked reconstruction.
    color_jitter: (brightness, contrast, saturation, hue) factors, torchvision semantics; 0 = off.
    camera_jitter: strength of augment.camera_response (per-channel colour cast, exposure, gamma,
      contrast); 0 = off.
    multicam_p, multicam_k: identities per global batch and images per identity.
    singlecam_batch_size: captioned images per global batch.
    max_text_len: token length L (truncate / pad).
    mask_ratio: share of patches masked for reconstruction.
    patch_size, patch_stride: ViT patching, to count patches (N = rows * cols of the patch grid).
    prefetch: batches prefetched by tf.data (besides AUTOTUNE parallel decoding).
    seed: fixes sampling, augmentation, caption choice and patch masks.
    image_check: "exists", "header" or "decode" (see images.py for what each costs).
    on_bad_image: "skip" (counted, logged) or "error" (names the file).
    unk_threshold: max share of [UNK] tokens in the first `unk_probe` captions.
    unk_probe: captions checked by the tokenizer guard.
  """

  image_size: tuple[int, int] = (256, 128)
  mean: tuple[float, float, float] = augment.IMAGENET_MEAN
  std: tuple[float, float, float] = augment.IMAGENET_STD
  hflip_prob: float = 0.5
  pad: int = 10
  erase_prob: float = 0.5
  erase_area: tuple[float, float] = (0.02, 0.4)
  erase_aspect: tuple[float, float] = (0.3, 3.33)
  erase_fill: str = "mean"
  singlecam_erase_prob: float = 0.0
  color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
  camera_jitter: float = 0.0
  multicam_p: int = 16
  multicam_k: int = 4
  singlecam_batch_size: int = 64
  max_text_len: int = 64
  mask_ratio: float = 0.5
  patch_size: int = 16
  patch_stride: int = 16
  prefetch: int = 2
  seed: int = 0
  image_check: str = "header"
  on_bad_image: str = "skip"
  unk_threshold: float = 0.05
  unk_probe: int = 256

  def __post_init__(self):
    for name in ("image_size", "mean", "std", "erase_area", "erase_aspect", "color_jitter"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    h, w = self.image_size
    checks = {
        "image_size": len(self.image_size) == 2 and h > 0 and w > 0,
        "mean": len(self.mean) == 3,
        "std": len(self.std) == 3 and all(s > 0 for s in self.std),
        "hflip_prob": 0 <= self.hflip_prob <= 1,
        "pad": self.pad >= 0,
        "erase_prob": 0 <= self.erase_prob <= 1,
        "singlecam_erase_prob": 0 <= self.singlecam_erase_prob <= 1,
        "erase_area": 0 < self.erase_area[0] <= self.erase_area[1] < 1,
        "erase_aspect": 0 < self.erase_aspect[0] <= self.erase_aspect[1],
        "erase_fill": self.erase_fill in augment.ERASE_FILLS,
        "color_jitter": len(self.color_jitter) == 4 and all(c >= 0 for c in self.color_jitter),
        "camera_jitter": 0 <= self.camera_jitter < 1,
        "multicam_p": self.multicam_p >= 1,
        "multicam_k": self.multicam_k >= 1,
        "singlecam_batch_size": self.singlecam_batch_size >= 1,
        "max_text_len": self.max_text_len >= 2,
        "mask_ratio": 0 <= self.mask_ratio < 1,
        "patch_size": 0 < self.patch_size <= min(h, w),
        "patch_stride": self.patch_stride >= 1,
        "prefetch": self.prefetch >= 0,
        "image_check": self.image_check in images.LEVELS,
        "on_bad_image": self.on_bad_image in images.POLICIES,
        "unk_threshold": 0 <= self.unk_threshold <= 1,
        "unk_probe": self.unk_probe >= 1,
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
      raise errors.ConfigError("invalid input config: " + ", ".join(
          f"{k}={getattr(self, k)!r}" for k in bad))

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any] | Any, ignore: Sequence[str] = ()) -> InputConfig:
    """From a dict or ml_collections.ConfigDict section; unknown keys are an error (typos)."""
    items = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(items) - known - set(ignore))
    if unknown:
      raise errors.UnknownKeyError(f"unknown input config key(s) {unknown}; known: {sorted(known)}")
    return cls(**{k: v for k, v in items.items() if k in known})

  @property
  def num_patches(self) -> int:
    h, w = self.image_size
    p, s = self.patch_size, self.patch_stride
    return ((h - p) // s + 1) * ((w - p) // s + 1)

  @property
  def num_masked(self) -> int:
    return masking.num_masked(self.mask_ratio, self.num_patches)


def as_config(cfg: InputConfig | Mapping[str, Any]) -> InputConfig:
  return cfg if isinstance(cfg, InputConfig) else InputConfig.from_config(cfg)


def per_host(global_size: int, key: str, process_count: int) -> int:
  """Global batch size -> this host's share; an error naming `key` if it does not divide."""
  if global_size % process_count:
    raise errors.ConfigError(
        f"{key}={global_size} is not divisible by process_count={process_count}")
  return global_size // process_count


# ---------------------------------------------------------------- tf image functions


def load_image(path: tf.Tensor, size: Sequence[int]) -> tf.Tensor:
  img = augment.resize(augment.decode(tf.io.read_file(path)), size)
  img.set_shape([size[0], size[1], 3])
  return img


def _train_view(img: tf.Tensor, seed: tf.Tensor, cfg: InputConfig, erase_prob: float) -> tf.Tensor:
  seeds = tf.random.experimental.stateless_split(seed, 4)
  img = augment.random_flip(img, seeds[0], cfg.hflip_prob)
  img = augment.pad_and_crop(img, seeds[1], cfg.pad)
  if any(cfg.color_jitter) or cfg.camera_jitter:
    jitter_seed, camera_seed = tf.unstack(tf.random.experimental.stateless_split(seeds[2], 2))
    if any(cfg.color_jitter):
      img = augment.color_jitter(img, jitter_seed, *cfg.color_jitter)
    img = augment.camera_response(img, camera_seed, cfg.camera_jitter)
  img = augment.normalize(img, cfg.mean, cfg.std)
  return augment.random_erase(img, seeds[3], erase_prob, cfg.erase_area, cfg.erase_aspect,
                              cfg.erase_fill)


def finish(ds: tf.data.Dataset, prefetch: int) -> tf.data.Dataset:
  opts = tf.data.Options()
  opts.deterministic = True
  opts.experimental_optimization.map_parallelization = True
  ds = ds.with_options(opts)
  return ds.prefetch(prefetch if prefetch > 0 else tf.data.AUTOTUNE)


def _concat_checked(sources: Sources, cfg: InputConfig, part: str
                    ) -> tuple[list[list[Record]], list[float]]:
  recs, weights = [], []
  for i, (records, weight) in enumerate(sources):
    what = f"{part} source {i}"
    if not len(records):
      raise errors.DataError(f"{what} has no records")
    recs.append(images.check_images(records, level=cfg.image_check,
                                    on_bad_image=cfg.on_bad_image, what=what))
    if not recs[-1]:
      raise errors.DataError(f"{what}: none of its {len(records)} images is usable")
    weights.append(float(weight))
  return recs, weights


# ---------------------------------------------------------------- multi-camera (PK) part


def _host_rows(batch: dict[str, np.ndarray], process_index: int, rows: int
               ) -> dict[str, np.ndarray]:
  """This host's `rows` consecutive rows of a global batch."""
  return {k: v[process_index * rows:(process_index + 1) * rows] for k, v in batch.items()}


def _multicam_dataset(sources: Sources, cfg: InputConfig, start_step: int, process_index: int,
                      process_count: int, tokenizer: TextTokenizer | None = None
                      ) -> tf.data.Dataset:
  """P x K batches; with `tokenizer`, each image also carries one of its captions per step
  (every training image must have one: attach a captions sidecar to the reader)."""
  recs, weights = _concat_checked(sources, cfg, "multicam")
  flat = [r for src in recs for r in src]
  if tokenizer is not None:
    bare = [r.path for r in flat if not any(c.strip() for c in r.captions)]
    if bare:
      raise errors.DataError(
          f"multicam source: {len(bare)} of {len(flat)} training images have no caption (first: "
          f"{bare[0]}); caption them with python -m retext_jax.tools.caption and pass the "
          "sidecar as the source's captions option")
    ids, tmask, first, count = tokenize_captions(
        [[c for c in r.captions if c.strip()] for r in flat], tokenizer, cfg.max_text_len,
        cfg.unk_threshold, cfg.unk_probe)
  paths = tf.constant([r.path for r in flat])
  pid = np.asarray([r.pid for r in flat], np.int32)
  camid = np.asarray([r.camid for r in flat], np.int32)
  k = cfg.multicam_k
  n = per_host(cfg.multicam_p, "multicam_p", process_count) * k
  sampler = sampling.PKSampler([np.asarray([r.pid for r in src]) for src in recs], weights,
                               cfg.multicam_p, k, cfg.seed)
  text_keys = ("tokens", "token_mask") if tokenizer is not None else ()

  def gen():
    rng = np.random.default_rng([cfg.seed, sampling.STREAM, 0x4D43])
    for step, (idx, _) in enumerate(sampler):
      ex = {"index": idx, "pid": pid[idx], "camid": camid[idx],
            "seed": rng.integers(0, 2**31 - 1, size=(len(idx), 2), dtype=np.int64)}
      if tokenizer is not None:
        cap = first[idx] + rng.integers(0, count[idx])
        ex.update(tokens=ids[cap].astype(np.int32), token_mask=tmask[cap].astype(np.int32))
      if step >= start_step:  # earlier batches are drawn (same random state) but not loaded
        yield _host_rows(ex, process_index, n)

  ds = tf.data.Dataset.from_generator(gen, output_signature={
      "index": tf.TensorSpec([n], tf.int64), "pid": tf.TensorSpec([n], tf.int32),
      "camid": tf.TensorSpec([n], tf.int32), "seed": tf.TensorSpec([n, 2], tf.int64),
      **{k: tf.TensorSpec([n, cfg.max_text_len], tf.int32) for k in text_keys}})

  @tf.autograph.experimental.do_not_convert  # plain TF ops; tf.cond is explicit
  def load(ex):
    img = load_image(tf.gather(paths, ex["index"]), cfg.image_size)
    return {"image": _train_view(img, ex["seed"], cfg, cfg.erase_prob),
            "record": tf.cast(ex["index"], tf.int32),
            **{k: ex[k] for k in ("pid", "camid", *text_keys)}}

  ds = ds.unbatch().map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return finish(ds.batch(n, drop_remainder=True), cfg.prefetch)


# ---------------------------------------------------------------- captioned single-camera part


def _clean_captions(records: Sequence[Record], what: str) -> tuple[list[Record], list[list[str]]]:
  kept, caps = [], []
  empty_caps = dropped = 0
  for r in records:
    good = [c.strip() for c in r.captions if c and c.strip()]
    empty_caps += len(r.captions) - len(good)
    if good:
      kept.append(r)
      caps.append(good)
    else:
      dropped += 1
  if empty_caps or dropped:
    logging.warning("%s: skipped %d empty caption(s); %d record(s) left without any caption were "
                    "dropped (first: %s)", what, empty_caps, dropped,
                    next((r.path for r in records if not any(c.strip() for c in r.captions)),
                         "none"))
  return kept, caps


def check_tokenizer(tokenizer: TextTokenizer, captions: Sequence[str], threshold: float = 0.05,
                    probe: int = 256) -> None:
  """Raises if the tokenizer turns ordinary caption words into [UNK] (a wrong vocabulary file)."""
  sample = [c for c in captions[:probe] if c.strip()]
  if not sample:
    return
  share = float(np.mean([tokenizer.unknown_fraction(c) for c in sample]))
  if share > threshold:
    raise errors.DataError(
        f"tokenizer from {tokenizer.source} maps {share:.0%} of the tokens of the first "
        f"{len(sample)} captions to [UNK] (threshold {threshold:.0%}); wrong vocabulary? "
        f"e.g. {sample[0]!r}")


def tokenize_captions(caps: Sequence[Sequence[str]], tokenizer: TextTokenizer, max_len: int,
                      threshold: float = 0.05, probe: int = 256
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Captions tokenised once: (ids [C, L], mask [C, L], first [R], count [R]) where record r owns
  rows first[r] .. first[r] + count[r] - 1 (count 0: not tokenised, e.g. another host's record).

  Stored compactly (ids uint16 when the vocabulary fits, mask uint8): SYNTH-PEDES' ~9M captions
  at L=64 take ~1.7 GB instead of 4.6 GB. Callers cast rows back to int32.
  """
  flat = [c for cs in caps for c in cs]
  check_tokenizer(tokenizer, flat, threshold, probe)
  ids, mask = tokenizer.encode(flat, max_len)
  if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1:
    ids = ids.astype(np.uint16)
  count = np.asarray([len(cs) for cs in caps], np.int64)
  first = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
  return ids, mask.astype(np.uint8), first, count


def _singlecam_dataset(sources: Sources, cfg: InputConfig, tokenizer: TextTokenizer | None,
                       start_step: int,
                       process_index: int, process_count: int) -> tf.data.Dataset:
  """Captioned images; without a tokenizer, images only (no caption needed, no token keys)."""
  checked, weights = _concat_checked(sources, cfg, "singlecam")
  recs, caps = [], []
  for i, src in enumerate(checked):
    if tokenizer is None:
      recs.append(list(src))
      continue
    kept, c = _clean_captions(src, f"singlecam source {i}")
    if not kept:
      raise errors.DataError(f"singlecam source {i}: no record has a non-empty caption")
    recs.append(kept)
    caps.extend(c)
  flat = [r for src in recs for r in src]
  b = per_host(cfg.singlecam_batch_size, "singlecam_batch_size", process_count)
  width = cfg.singlecam_batch_size
  sampler = sampling.StreamSampler([len(s) for s in recs], weights, width, cfg.seed)
  if tokenizer is not None:
    ids, tmask, first, count = tokenize_captions(caps, tokenizer, cfg.max_text_len,
                                                 cfg.unk_threshold, cfg.unk_probe)
  paths = tf.constant([r.path for r in flat])
  pid = np.asarray([r.pid for r in flat], np.int32)
  n_patch, n_mask, length = cfg.num_patches, cfg.num_masked, cfg.max_text_len
  text_keys = ("tokens", "token_mask") if tokenizer is not None else ()

  def gen():
    rng = np.random.default_rng([cfg.seed, sampling.STREAM, 0x5343])
    for step, (idx, _) in enumerate(sampler):
      ex = {"index": idx, "pid": pid[idx]}
      if tokenizer is not None:
        cap = first[idx] + rng.integers(0, count[idx])
        ex.update(tokens=ids[cap].astype(np.int32), token_mask=tmask[cap].astype(np.int32))
      ex.update(patch_mask=masking.random_patch_mask(rng, width, n_patch, n_mask),
                seed=rng.integers(0, 2**31 - 1, size=(width, 2), dtype=np.int64))
      if step >= start_step:  # earlier batches are drawn (same random state) but not loaded
        yield _host_rows(ex, process_index, b)

  text_spec = {k: tf.TensorSpec([b, length], tf.int32) for k in text_keys}
  ds = tf.data.Dataset.from_generator(gen, output_signature={
      "index": tf.TensorSpec([b], tf.int64), "pid": tf.TensorSpec([b], tf.int32), **text_spec,
      "patch_mask": tf.TensorSpec([b, n_patch], tf.bool),
      "seed": tf.TensorSpec([b, 2], tf.int64)})

  @tf.autograph.experimental.do_not_convert  # plain TF ops; tf.cond is explicit
  def load(ex):
    img = load_image(tf.gather(paths, ex["index"]), cfg.image_size)
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(ex["seed"], 2))
    out = {k: ex[k] for k in ("pid", *text_keys, "patch_mask")}
    out["view1"] = _train_view(img, s1, cfg, cfg.singlecam_erase_prob)
    out["view2"] = _train_view(img, s2, cfg, cfg.singlecam_erase_prob)
    return out

  ds = ds.unbatch().map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return finish(ds.batch(b, drop_remainder=True), cfg.prefetch)


# ---------------------------------------------------------------- public entry points


def make_train_dataset(multicam_sources: Sources, singlecam_sources: Sources,
                       cfg: InputConfig | Mapping[str, Any], *,
                       tokenizer: TextTokenizer | None = None, multicam_captions: bool = False,
                       process_index: int = 0, process_count: int = 1,
                       start_step: int = 0) -> tf.data.Dataset:
  """The endless training tf.data.Dataset of flat-keyed batches (see the module docstring),
  from batch `start_step` on: the batch of each step is the same whether a run starts there or
  got there (a resumed run continues exactly where it stopped)."""
  cfg = as_config(cfg)
  parts = {}
  if multicam_captions and tokenizer is None:
    raise ValueError("multicam_captions needs the tokenizer")
  if multicam_sources:
    parts["multicam"] = _multicam_dataset(multicam_sources, cfg, start_step, process_index,
                                          process_count,
                                          tokenizer if multicam_captions else None)
  if singlecam_sources:
    parts["singlecam"] = _singlecam_dataset(singlecam_sources, cfg, tokenizer, start_step,
                                            process_index, process_count)
  if not parts:
    raise errors.ConfigError("no training sources: give multicam_sources and/or singlecam_sources")
  return tf.data.Dataset.zip(parts).map(_flatten_keys)


@tf.autograph.experimental.do_not_convert
def _flatten_keys(parts: dict[str, dict[str, tf.Tensor]]) -> dict[str, tf.Tensor]:
  return {f"{part}/{k}": v for part, ex in parts.items() for k, v in ex.items()}


def make_train_iterator(multicam_sources: Sources, singlecam_sources: Sources,
                        cfg: InputConfig | Mapping[str, Any], *,
                        tokenizer: TextTokenizer | None = None, multicam_captions: bool = False,
                        process_index: int = 0, process_count: int = 1,
                        start_step: int = 0) -> Iterator[Batch]:
  """Endless iterator of numpy train batches for this host, from step `start_step` on.

  Args:
    multicam_sources: `(records, weight)` pairs of labelled multi-camera data (ids unique across
      sources: build them with records.disjoint_ids); empty to train without the Re-ID part.
    singlecam_sources: `(records, weight)` pairs of captioned images; empty for "Re-ID only".
    cfg: InputConfig or a mapping / ConfigDict of its fields. Batch sizes are global.
    tokenizer: needed when singlecam_sources are given or multicam_captions is set.
    multicam_captions: the multi-camera batches carry one caption per image too
      (multicam/tokens, multicam/token_mask), drawn per step among the image's captions.
    process_index, process_count: this host among all hosts (jax.process_index/count()).
    start_step: the first batch (a resumed run's step): the batches are those an uninterrupted
      run gets at these steps (the samplers are advanced without loading images).
  """
  ds = make_train_dataset(multicam_sources, singlecam_sources, cfg, tokenizer=tokenizer,
                          multicam_captions=multicam_captions, process_index=process_index,
                          process_count=process_count, start_step=start_step)
  return ds.as_numpy_iterator()
