"""Query/gallery evaluation of a feature extractor on a target domain (Market/MSMT protocol).

The evaluator only needs a `predict_fn(images) -> features`; the metrics come from
`retext_jax.evaluation`, which imports without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils

from retext_jax import evaluation

PredictFn = Callable[[np.ndarray], jax.Array]


def extract(predict_fn: PredictFn, records, input_cfg, batch_size: int
            ) -> tuple[np.ndarray, np.ndarray]:
  """(features [n, D] L2-normalised float32, record positions [n]) in record order.

  Images the pipeline skipped as unreadable (on_bad_image="skip") are absent: the positions
  say which records the rows belong to.
  """
  from input_pipeline import eval_pipeline

  feats, index = [], []
  it = eval_pipeline.make_eval_iterator(records, input_cfg, batch_size,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count())
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


def evaluate_target(predict_fn: PredictFn, dataset, input_cfg, batch_size: int,
                    max_rank: int = 50) -> dict[str, float]:
  """Rank-1/5/10, mAP and mINP of one target (cosine distance on normalised features)."""
  q, qi = extract(predict_fn, dataset.query, input_cfg, batch_size)
  g, gi = extract(predict_fn, dataset.gallery, input_cfg, batch_size)
  field = lambda recs, idx, name: np.asarray([getattr(recs[i], name) for i in idx])
  res = evaluation.evaluate_features(
      q, g, field(dataset.query, qi, "pid"), field(dataset.gallery, gi, "pid"),
      field(dataset.query, qi, "camid"), field(dataset.gallery, gi, "camid"),
      max_rank=max_rank,
  )
  cmc = res["cmc"]
  return {"rank1": float(cmc[0]), "rank5": float(cmc[4]), "rank10": float(cmc[9]),
          "mAP": float(res["mAP"]), "mINP": float(res["mINP"])}


def evaluate_all(predict_fn: PredictFn, targets: Mapping, input_cfg, batch_size: int,
                 max_rank: int = 50) -> dict[str, dict[str, float]]:
  results = {name: evaluate_target(predict_fn, ds, input_cfg, batch_size, max_rank)
             for name, ds in targets.items()}
  if len(results) > 1:
    keys = next(iter(results.values())).keys()
    results["average"] = {k: float(np.mean([r[k] for r in results.values()])) for k in keys}
  return results
