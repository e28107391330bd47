"""Query/gallery evaluation of a feature extractor on a target domain (Market/MSMT protocol).

The evaluator only needs a `predict_fn(images) -> features`; the metrics come from
`retext_jax.evaluation`, which imports without TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils

from retext_jax import evaluation

PredictFn = Callable[[np.ndarray], jax.Array]


def extract(predict_fn: PredictFn, records, input_cfg, batch_size: int,
            progress: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(features [n, D] L2-normalised float32, record positions [n]) in record order.

  Images the pipeline skipped as unreadable (on_bad_image="skip") are absent: the positions
  say which records the rows belong to. `progress` names a progress bar (tools; None = quiet).
  """
  from input_pipeline import eval_pipeline

  feats, index = [], []
  it = eval_pipeline.make_eval_iterator(records, input_cfg, batch_size,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count())
  if progress:
    import tqdm

    it = tqdm.tqdm(it, desc=progress, total=-(-len(records) // batch_size), unit="batch",
                   leave=False)
  for batch in it:
    f = np.asarray(jax.device_get(predict_fn(batch["image"])), np.float32)
    feats.append(f[batch["valid"]])
    index.append(batch["index"][batch["valid"]])
  feats, index = np.concatenate(feats), np.concatenate(index)
  if jax.process_count() > 1:
    feats = np.concatenate(list(multihost_utils.process_allgather(feats)))
    index = np.concatenate(list(multihost_utils.process_allgather(index)))
  order = np.argsort(index)
  feats, index = feats[order], index[order]
  return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12), index


@dataclasses.dataclass
class Features:
  """Features of a split with the ids, cameras and records of their rows."""

  feats: np.ndarray
  pids: np.ndarray
  camids: np.ndarray
  records: list

  @classmethod
  def of(cls, predict_fn: PredictFn, records, input_cfg, batch_size: int,
         progress: str | None = None) -> Features:
    feats, index = extract(predict_fn, records, input_cfg, batch_size, progress)
    rows = [records[i] for i in index]
    return cls(feats, np.asarray([r.pid for r in rows]), np.asarray([r.camid for r in rows]),
               rows)


def summarize(res: dict) -> dict[str, float]:
  """Rank-1/5/10, mAP, mINP of an `evaluate_rank` result (what the trainer logs)."""
  cmc = res["cmc"]
  out = {f"rank{k}": float(cmc[min(k, len(cmc)) - 1]) for k in (1, 5, 10)}
  return {**out, "mAP": float(res["mAP"]), "mINP": float(res["mINP"])}


def evaluate_target(predict_fn: PredictFn, dataset, input_cfg, batch_size: int,
                    max_rank: int = 50) -> dict[str, float]:
  """Rank-1/5/10, mAP and mINP of one target (cosine distance on normalised features)."""
  q = Features.of(predict_fn, dataset.query, input_cfg, batch_size)
  g = Features.of(predict_fn, dataset.gallery, input_cfg, batch_size)
  return summarize(evaluation.evaluate_features(q.feats, g.feats, q.pids, g.pids, q.camids,
                                                g.camids, max_rank=max_rank))


def evaluate_all(predict_fn: PredictFn, targets: Mapping, input_cfg, batch_size: int,
                 max_rank: int = 50) -> dict[str, dict[str, float]]:
  results = {name: evaluate_target(predict_fn, ds, input_cfg, batch_size, max_rank)
             for name, ds in targets.items()}
  if len(results) > 1:
    keys = next(iter(results.values())).keys()
    results["average"] = {k: float(np.mean([r[k] for r in results.values()])) for k in keys}
  return results
