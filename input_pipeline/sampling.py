"""Which records go into each batch: identity (PK) batches and a weighted image stream, in numpy.

Index generation is kept out of tf.data on purpose: PK batching needs per-identity bookkeeping
that tf.data's shuffle buffers cannot express, and numpy permutations give exact, seedable epochs.
tf.data then only decodes and augments the chosen files (see `pipeline.py`).

Mixing several sources: every *slot* of a batch (an identity slot for PK batches, an image slot for
the stream) picks its source by the configured weights, so the expected share of each source in
every batch is exactly its weight, batches mix domains (triplet negatives come from several
sources), and no source ever needs to be exhausted in step with another. Each source keeps its own
epoch: a fresh permutation of its identities / images once the previous one is used.

The samplers draw *global* batches: every host runs the same sampler and loads its own rows of
each batch (`pipeline.py`), so a batch does not depend on how many hosts share it, and a run on
one host and on several sees the same data.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence

import numpy as np

from retext_jax import errors

# Part of every seed sequence (where a host index once was), so that the draws of runs made
# before batches became global stay the same.
STREAM = 0


def normalize_weights(weights: Sequence[float], what: str) -> np.ndarray:
  w = np.asarray(weights, np.float64)
  if w.ndim != 1 or len(w) == 0:
    raise errors.ConfigError(f"{what}: need at least one source weight, got {list(weights)}")
  if np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
    raise errors.ConfigError(
        f"{what}: source weights must be finite, >= 0 and not all 0, got {list(w)}")
  return w / w.sum()


class _Epochs:
  """An endless sequence of items, reshuffled every epoch (permutation seeded by seed + epoch)."""

  def __init__(self, items: np.ndarray, seed: Sequence[int]):
    self.items = items
    self._seed = list(seed)
    self.epoch = -1
    self._queue: collections.deque[int] = collections.deque()

  def _refill(self) -> None:
    self.epoch += 1
    rng = np.random.default_rng([*self._seed, self.epoch])
    self._queue.extend(self.items[rng.permutation(len(self.items))].tolist())

  def take(self, n: int, exclude: set[int] | None = None) -> list[int]:
    """Next `n` items. Items in `exclude` (or already taken) are skipped and stay at the front of
    the queue: an identity must not appear twice in one batch when an epoch ends mid-batch."""
    out: list[int] = []
    skipped: list[int] = []
    while len(out) < n:
      if not self._queue:
        self._refill()
      item = self._queue.popleft()
      if exclude is not None and (item in exclude or item in out):
        skipped.append(item)
      else:
        out.append(item)
    self._queue.extendleft(reversed(skipped))
    return out


class PKSampler:
  """P identities x K images per batch, over several weighted sources of labelled records.

  Args:
    pids: one int array per source: the person id of every record (ids unique across sources).
    weights: relative weight of each source (share of identity slots).
    p: identities per (global) batch.
    k: images per identity; identities with fewer images are sampled with replacement.
    seed: makes the whole sequence deterministic.

  Yields `(indices, slot_source)`: int64 [p*k] positions in the concatenation of the sources'
  records (identity-major: rows i*k..i*k+k-1 share one identity), int32 [p] the source of each
  identity slot.
  """

  def __init__(self, pids: Sequence[np.ndarray], weights: Sequence[float], p: int, k: int,
               seed: int):
    if p < 1 or k < 1:
      raise errors.ConfigError(f"PK sampling needs p >= 1 and k >= 1, got p={p}, k={k}")
    if len(pids) != len(weights):
      raise ValueError(f"{len(pids)} sources but {len(weights)} weights")
    self.p, self.k, self.seed = p, k, seed
    self.weights = normalize_weights(weights, "multicam sources")
    self._images: dict[int, np.ndarray] = {}  # pid -> global record positions
    self._epochs: list[_Epochs] = []
    offset = 0
    seen: set[int] = set()
    for s, src in enumerate(pids):
      src = np.asarray(src, np.int64)
      uniq = np.unique(src)
      if seen.intersection(uniq.tolist()):
        raise ValueError(f"multicam source {s} reuses person ids of an earlier source; "
                         "combine sources with input_pipeline.records.disjoint_ids")
      seen.update(uniq.tolist())
      order = np.argsort(src, kind="stable")
      bounds = np.searchsorted(src[order], uniq)
      for pid, group in zip(uniq, np.split(order + offset, bounds[1:]), strict=True):
        self._images[int(pid)] = group
      if self.weights[s] > 0 and len(uniq) < p:
        raise errors.ConfigError(
            f"multicam source {s} has {len(uniq)} identities but a batch may need p={p} of "
            "them: lower multicam_p or drop the source")
      self._epochs.append(_Epochs(uniq, [seed, STREAM, s, 0x504B]))
      offset += len(src)

  def epoch(self, source: int) -> int:
    return self._epochs[source].epoch

  def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng([self.seed, STREAM, 0x494D47])
    while True:
      counts = rng.multinomial(self.p, self.weights)
      ids: list[int] = []
      slot_source: list[int] = []
      for s, n in enumerate(counts):
        if n:
          ids.extend(self._epochs[s].take(int(n), exclude=set(ids)))
          slot_source.extend([s] * int(n))
      rows = []
      for pid in ids:
        group = self._images[pid]
        rows.append(rng.choice(group, size=self.k, replace=len(group) < self.k))
      yield np.concatenate(rows).astype(np.int64), np.asarray(slot_source, np.int32)


class StreamSampler:
  """Batches of single images drawn from several weighted sources (the captioned stream).

  Args:
    sizes: number of records of each source.
    weights: relative weight of each source (share of image slots).
    batch_size: images per (global) batch.
    seed: makes the whole sequence deterministic.

  Yields `(indices, slot_source)`: int64 [batch_size] positions in the concatenation of the
  sources' records and int32 [batch_size] the source of each slot.
  """

  def __init__(self, sizes: Sequence[int], weights: Sequence[float], batch_size: int, seed: int):
    if batch_size < 1:
      raise errors.ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if len(sizes) != len(weights):
      raise ValueError(f"{len(sizes)} sources but {len(weights)} weights")
    self.batch_size, self.seed = batch_size, seed
    self.weights = normalize_weights(weights, "singlecam sources")
    self._epochs = []
    offset = 0
    for s, n in enumerate(sizes):
      if self.weights[s] > 0 and n == 0:
        raise errors.DataError(f"singlecam source {s} has no images")
      self._epochs.append(_Epochs(np.arange(offset, offset + n), [seed, STREAM, s, 0x5354]))
      offset += n

  def epoch(self, source: int) -> int:
    return self._epochs[source].epoch

  def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng([self.seed, STREAM, 0x535452])
    while True:
      slot_source = rng.choice(len(self.weights), size=self.batch_size, p=self.weights)
      idx = np.empty(self.batch_size, np.int64)
      for s in np.unique(slot_source):
        where = np.flatnonzero(slot_source == s)
        idx[where] = self._epochs[s].take(len(where))
      yield idx, slot_source.astype(np.int32)
