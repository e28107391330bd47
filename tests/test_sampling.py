"""PK identity sampling and the weighted image stream (numpy only, no TensorFlow)."""

import collections

import numpy as np
import pytest

from input_pipeline.sampling import PKSampler, StreamSampler
from retext_jax import errors


def _pids(counts: dict[int, int]) -> np.ndarray:
  return np.concatenate([np.full(n, pid) for pid, n in counts.items()])


def _take(sampler, n):
  it = iter(sampler)
  return [next(it) for _ in range(n)]


def test_pk_batches_hold_p_distinct_identities_with_k_images_each():
  counts = {pid: 1 + pid % 5 for pid in range(23)}  # 1..5 images; K=4 needs replacement for some
  pids = _pids(counts)
  p, k = 6, 4
  for idx, src in _take(PKSampler([pids], [1.0], p, k, seed=3), 40):
    assert idx.shape == (p * k,) and src.shape == (p,)
    blocks = pids[idx].reshape(p, k)
    assert np.all(blocks == blocks[:, :1]), "each row of K must be one identity"
    assert len(set(blocks[:, 0])) == p
    for row in idx.reshape(p, k):
      pid = pids[row[0]]
      if counts[pid] >= k:  # enough images: no image twice
        assert len(set(row)) == k


def test_pk_epoch_visits_every_identity_once_and_reshuffles():
  pids = _pids({pid: 3 for pid in range(12)})
  p = 4
  sampler = PKSampler([pids], [1.0], p, 2, seed=0)
  batches = _take(sampler, 6)  # two epochs of 12 identities
  first = [pids[i] for b, _ in batches[:3] for i in b[::2]]
  second = [pids[i] for b, _ in batches[3:] for i in b[::2]]
  assert sorted(first) == list(range(12)) and sorted(second) == list(range(12))
  assert first != second


def test_pk_epoch_boundary_never_repeats_an_identity_in_a_batch():
  pids = _pids({pid: 2 for pid in range(7)})  # 7 ids, P=5: epochs end mid-batch
  for idx, _ in _take(PKSampler([pids], [1.0], 5, 2, seed=1), 50):
    assert len(set(pids[idx[::2]])) == 5


def test_pk_source_mixing_matches_weights():
  a = _pids({pid: 4 for pid in range(30)})
  b = _pids({pid: 4 for pid in range(100, 130)})
  p, steps, w = 8, 500, np.array([0.7, 0.3])
  slots = np.concatenate([s for _, s in _take(PKSampler([a, b], w, p, 2, seed=5), steps)])
  n = len(slots)
  share = np.mean(slots == 1)
  sd = np.sqrt(w[1] * (1 - w[1]) / n)
  assert abs(share - w[1]) < 4 * sd, (share, sd)
  # Slots really come from their source: ids of source 1 are >= 100.
  for idx, src in _take(PKSampler([a, b], w, p, 2, seed=5), 20):
    ids = np.concatenate([a, b])[idx[::2]]
    assert np.array_equal(ids >= 100, src == 1)


def test_pk_seed_determinism():
  pids = _pids({pid: 3 for pid in range(20)})
  same = [_take(PKSampler([pids], [1.0], 4, 3, seed=s), 3) for s in (1, 1, 2)]
  assert all(np.array_equal(x[0], y[0]) for x, y in zip(same[0], same[1], strict=True))
  assert not all(np.array_equal(x[0], y[0]) for x, y in zip(same[0], same[2], strict=True))


def test_pk_errors_name_the_problem():
  pids = _pids({pid: 2 for pid in range(5)})
  with pytest.raises(ValueError, match="multicam source 0 has 5 identities.*multicam_p") as e:
    PKSampler([pids], [1.0], 6, 2, seed=0)
  assert isinstance(e.value, errors.ConfigError)
  with pytest.raises(ValueError, match="reuses person ids") as e:
    PKSampler([pids, pids], [1.0, 1.0], 2, 2, seed=0)
  assert not isinstance(e.value, errors.UserError)  # data.disjoint_ids prevents it: a bug
  with pytest.raises(ValueError, match="weights must be finite") as e:
    PKSampler([pids], [-1.0], 2, 2, seed=0)
  assert isinstance(e.value, errors.ConfigError)


def test_stream_mixing_and_epochs():
  sizes, w = [50, 30], np.array([0.25, 0.75])
  batches = _take(StreamSampler(sizes, w, 16, seed=2), 300)
  slots = np.concatenate([s for _, s in batches])
  sd = np.sqrt(w[0] * (1 - w[0]) / len(slots))
  assert abs(np.mean(slots == 0) - w[0]) < 4 * sd
  for idx, src in batches:  # positions lie inside their source's range of the concatenation
    assert np.array_equal(idx >= 50, src == 1)
  # A single source: the first epoch is a permutation of all images.
  first = np.concatenate([b for b, _ in _take(StreamSampler([40], [1.0], 8, seed=0), 5)])
  assert sorted(first.tolist()) == list(range(40))
  counter = collections.Counter(int(i) for b, _ in _take(StreamSampler([10], [1.0], 5, 1), 4)
                                for i in b)
  assert set(counter.values()) == {2}  # two full epochs
