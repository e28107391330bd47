"""Ordered, unaugmented evaluation pipelines: query/gallery images and text queries.

Batches keep a fixed shape (padding rows have `valid` False) so one compiled feature extractor
serves every batch; hosts take contiguous chunks and yield the same number of batches.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from input_pipeline import augment, images, pipeline
from input_pipeline.pipeline import Batch, InputConfig
from input_pipeline.records import Record
from retext_jax import errors

if TYPE_CHECKING:
  from retext_jax.tokenizers import TextTokenizer


def _host_slice(n: int, batch_size: int, process_index: int, process_count: int
                ) -> tuple[np.ndarray, int]:
  """Positions 0..n-1 of this host (contiguous chunk) and the padded length (same on all hosts)."""
  b = pipeline.per_host(batch_size, "batch_size", process_count)
  chunk = -(-n // process_count)
  mine = np.arange(process_index * chunk, min((process_index + 1) * chunk, n))
  return mine, max(1, -(-chunk // b)) * b


def make_eval_iterator(records: Sequence[Record], cfg: InputConfig | Mapping[str, Any],
                       batch_size: int, *, process_index: int = 0,
                       process_count: int = 1) -> Iterator[Batch]:
  """Ordered, unaugmented image batches of fixed shape for feature extraction.

  Yields `image` float32 [b, H, W, 3], `pid` int32, `camid` int32, `index` int64 (position in
  `records`; -1 for padding) and `valid` bool (False for padding in the last batch), with
  b = batch_size / process_count. Hosts take contiguous chunks and yield the same number of
  batches. Bad images are dropped (or raise) per `cfg.on_bad_image`; their positions never appear.
  """
  cfg = pipeline.as_config(cfg)
  if not len(records):
    raise errors.DataError("make_eval_iterator: no records")
  ok = images.usable(records, level=cfg.image_check, on_bad_image=cfg.on_bad_image,
                     what="eval records")
  positions = np.flatnonzero(ok).astype(np.int64)
  if not len(positions):
    raise errors.DataError(f"make_eval_iterator: none of the {len(records)} images is usable")
  mine, padded = _host_slice(len(positions), batch_size, process_index, process_count)
  pos = np.full(padded, -1, np.int64)
  pos[:len(mine)] = positions[mine]
  valid = pos >= 0
  src = np.where(valid, pos, positions[0])
  pid = np.where(valid, [records[i].pid for i in src], -1).astype(np.int32)
  camid = np.where(valid, [records[i].camid for i in src], -1).astype(np.int32)
  paths = np.asarray([records[i].path for i in src], object)
  b = pipeline.per_host(batch_size, "batch_size", process_count)
  return _decoded_batches(paths, {"pid": pid, "camid": camid, "index": pos, "valid": valid}, cfg,
                          b)


def _decoded_batches(paths: np.ndarray, rows: dict[str, np.ndarray], cfg: InputConfig, b: int
                     ) -> Iterator[Batch]:
  """Batches of `b` rows. An image that passed the up-front check but fails to decode (corrupt
  data between a valid header and end marker) is found by decoding the failing batch's files,
  then skipped by name and counted (its row becomes padding, so every host still yields the same
  number of batches) or, under on_bad_image="error", raised."""

  @tf.autograph.experimental.do_not_convert  # plain TF ops; tf.cond is explicit
  def load(path, ex):
    img = augment.normalize(pipeline.load_image(path, cfg.image_size), cfg.mean, cfg.std)
    return {"image": img, **ex}

  done, skipped = 0, 0  # batches yielded
  while done * b < len(paths):
    start = done * b
    ds = tf.data.Dataset.from_tensor_slices(
        (paths[start:].astype(str), {k: v[start:] for k, v in rows.items()}))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    try:
      for batch in pipeline.finish(ds.batch(b, drop_remainder=True),
                                   cfg.prefetch).as_numpy_iterator():
        yield batch
        done += 1
    except tf.errors.InvalidArgumentError:
      before = int(rows["valid"].sum())
      if not _drop_undecodable(paths, rows, slice(done * b, (done + 1) * b), cfg):
        raise  # every file of the batch decodes: not an image problem
      skipped += before - int(rows["valid"].sum())
  if skipped:
    logging.warning("%d image(s) that do not decode were skipped during evaluation", skipped)


def _drop_undecodable(paths: np.ndarray, rows: dict[str, np.ndarray], batch: slice,
                      cfg: InputConfig) -> int:
  """Turns the rows of `batch` whose files do not decode into padding (or raises under
  on_bad_image="error"); returns how many rows failed (padding rows included: they repeat a
  file too)."""
  problems = {i: images.image_problem(paths[i], "decode") for i in np.arange(len(paths))[batch]}
  bad = [i for i, why in problems.items() if why]
  named = [i for i in bad if rows["valid"][i]]
  if named and cfg.on_bad_image == "error":
    raise images.BadImageError(f"image {paths[named[0]]} {problems[named[0]]}; set "
                               "on_bad_image='skip' to drop bad files")
  if named:
    logging.warning("skipped %d image(s) that do not decode: %s", len(named),
                    ", ".join(f"{paths[i]} ({problems[i]})" for i in named[:5]))
  if bad:  # padding needs a file that decodes: one read before this batch, or one of it
    fine = next((i for i in range(batch.start) if rows["valid"][i]), None)
    if fine is None:
      fine = next((i for i, why in problems.items() if not why), None)
    if fine is None:
      raise errors.DataError(f"no image of the first evaluation batch decodes (first: "
                             f"{paths[bad[0]]})")
    for i in bad:
      paths[i] = paths[fine]
      rows["valid"][i], rows["index"][i], rows["pid"][i], rows["camid"][i] = False, -1, -1, -1
  return len(bad)


def make_text_eval_iterator(records: Sequence[Record], tokenizer: TextTokenizer, max_len: int,
                            batch_size: int, *, process_index: int = 0, process_count: int = 1,
                            unk_threshold: float = 0.05) -> Iterator[Batch]:
  """Text queries for text-to-image retrieval: every caption of every record is one query (IRRA).

  Yields `tokens`, `token_mask` int32 [b, L], `pid` int32, `index` int64 (query number, records
  in order, captions in order; -1 for padding), `image_index` int64 (position of the captioned
  record in `records`) and `valid` bool, b = batch_size / process_count.
  """
  rec_pos, caps = [], []
  empty = 0
  for i, r in enumerate(records):
    for c in r.captions:
      if c and c.strip():
        rec_pos.append(i)
        caps.append(c.strip())
      else:
        empty += 1
  if empty:
    logging.warning("text eval: skipped %d empty caption(s)", empty)
  if not caps:
    raise errors.DataError("make_text_eval_iterator: no record has a non-empty caption")
  pipeline.check_tokenizer(tokenizer, caps, unk_threshold)
  mine, padded = _host_slice(len(caps), batch_size, process_index, process_count)
  ids, mask = tokenizer.encode([caps[i] for i in mine], max_len)
  n = len(mine)
  query = np.full(padded, -1, np.int64)
  query[:n] = mine
  image_index = np.full(padded, -1, np.int64)
  image_index[:n] = np.asarray(rec_pos, np.int64)[mine]
  pid = np.full(padded, -1, np.int32)
  pid[:n] = [records[i].pid for i in image_index[:n]]
  tokens = np.full((padded, max_len), tokenizer.pad_id, np.int32)
  tokens[:n] = ids
  tmask = np.zeros((padded, max_len), np.int32)
  tmask[:n] = mask
  b = pipeline.per_host(batch_size, "batch_size", process_count)
  # A list, not a generator function: config and tokenizer errors surface at the call.
  return iter([{"tokens": tokens[s:s + b], "token_mask": tmask[s:s + b], "pid": pid[s:s + b],
                "index": query[s:s + b], "image_index": image_index[s:s + b],
                "valid": query[s:s + b] >= 0} for s in range(0, padded, b)])
