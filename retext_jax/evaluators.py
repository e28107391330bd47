"""Evaluators built from `config.evals`, and the metric code the protocol runner shares.

Each entry of `config.evals` names an evaluator type and the `config.data.targets` it reads:

    config.evals = {
        "reid": dict(type="reid"),                      # query/gallery Re-ID on every target
        "t2i": dict(type="text", targets=("captions_test",)),  # captions -> images
    }

An evaluator runs over a trained model (`inference.TrainedModel`: the trainer wraps its live
state in one, the tools restore one from a workdir) and returns, per target, the scalars of
`SCALARS` as fractions: "R1", "R5", "R10" (CMC), "mAP", "mINP". The protocol runner
(`retext_jax.protocols`) calls the same `reid_metrics` / `text_metrics`. The metrics come from
`retext_jax.evaluation`, which imports without TensorFlow; reading images needs the pipeline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from retext_jax import errors, evaluation
from retext_jax.protocols import REID, SCALARS, TEXT

PredictFn = Callable[[np.ndarray], jax.Array]


def extract(predict_fn: PredictFn, records, input_cfg, batch_size: int,
            progress: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(features [n, D] float32 as `predict_fn` gives them, record positions [n]) in record
  order (every predict function of a method L2-normalises its output).

  Images the pipeline skipped as unreadable (on_bad_image="skip") are absent: the positions
  say which records the rows belong to. `progress` names a progress bar (tools; None = quiet).
  """
  from input_pipeline import eval_pipeline

  feats, index, valid = [], [], []
  it = eval_pipeline.make_eval_iterator(records, input_cfg, batch_size,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count())
  if progress:
    import tqdm

    it = tqdm.tqdm(it, desc=progress, total=-(-len(records) // batch_size), unit="batch",
                   leave=False)
  for batch in it:
    feats.append(np.asarray(predict_fn(batch["image"]), np.float32))
    index.append(batch["index"])
    valid.append(batch["valid"])
  feats, index = _all_hosts_valid_rows(valid, feats, index)
  order = np.argsort(index)
  return feats[order], index[order]


def _all_hosts_valid_rows(valid: list[np.ndarray], *parts: list[np.ndarray]
                          ) -> list[np.ndarray]:
  """Each part's batches concatenated, over all hosts (each holds equally many rows, padding
  included), without the padding rows (`valid` False)."""
  arrays = [np.concatenate(p) for p in (valid, *parts)]
  if jax.process_count() > 1:
    arrays = [np.concatenate(list(multihost_utils.process_allgather(a))) for a in arrays]
  keep = arrays[0]
  return [a[keep] for a in arrays[1:]]


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


class FeatureCache:
  """Features by image path, so that each image goes through the model once (the 10 splits of
  a Protocol-1 target reuse the same images; query and gallery may overlap)."""

  def __init__(self, trained, kind: str, batch_size: int, progress: bool = False):
    self.trained, self.kind, self.batch_size, self.progress = trained, kind, batch_size, progress
    self.rows: dict[str, np.ndarray] = {}

  def __call__(self, records: Sequence, what: str) -> Features:
    todo = list({r.path: r for r in records if r.path not in self.rows}.values())
    if todo:
      f = self.trained.embed_records(todo, self.kind, self.batch_size,
                                     what if self.progress else None)
      self.rows.update(zip((r.path for r in f.records), f.feats, strict=True))
    kept = [r for r in records if r.path in self.rows]  # unreadable images are skipped
    if not kept:
      raise errors.DataError(f"{what}: none of the {len(records)} images could be read")
    return Features(np.stack([self.rows[r.path] for r in kept]),
                    np.asarray([r.pid for r in kept]), np.asarray([r.camid for r in kept]), kept)


def raw_pixels(path: str, size: tuple[int, int] = (16, 32)) -> np.ndarray:
  """A training-free feature: the image box-downsampled to `size` (width, height) RGB pixels,
  minus its own mean (which removes the global exposure). Compared by cosine, it is the
  baseline a trained model must beat."""
  from PIL import Image

  with Image.open(path) as im:
    small = np.asarray(im.convert("RGB").resize(size, Image.Resampling.BOX), np.float32)
  return (small - small.mean()).reshape(-1)


class PixelFeatures:
  """Stands in for a FeatureCache with `raw_pixels` features: no model involved."""

  def __call__(self, records: Sequence, what: str) -> Features:
    records = list(records)
    if not records:
      raise errors.DataError(f"{what}: no images")
    return Features(np.stack([raw_pixels(r.path) for r in records]),
                    np.asarray([r.pid for r in records]), np.asarray([r.camid for r in records]),
                    records)


def summary(res: dict, num_query: int, num_gallery: int) -> dict[str, Any]:
  """SCALARS (CMC at 1/5/10, clamped to the gallery size), the CMC curve and the sizes."""
  cmc = res["cmc"]
  out = {f"R{k}": float(cmc[min(k, len(cmc)) - 1]) for k in (1, 5, 10)}
  return {**out, "mAP": float(res["mAP"]), "mINP": float(res["mINP"]), "cmc": cmc.tolist(),
          "num_query": num_query, "num_gallery": num_gallery}


def reid_metrics(embed: FeatureCache, dataset, rerank: bool = False, max_rank: int = 50
                 ) -> dict[str, Any]:
  """Query against gallery of `dataset` (same-camera matches of the query's identity and junk
  removed): SCALARS, the CMC curve and the sizes."""
  return _reid(embed, dataset, rerank, max_rank)[0]


def _reid(embed: FeatureCache, dataset, rerank: bool, max_rank: int
          ) -> tuple[dict[str, Any], Features, Features, np.ndarray | None]:
  """`reid_metrics` plus the query and gallery features and, with re-ranking, the distances."""
  q = embed(dataset.query, f"{dataset.name} query")
  g = embed(dataset.gallery, f"{dataset.name} gallery")
  dist = None
  if rerank:
    dist = evaluation.k_reciprocal_rerank(q.feats, g.feats)
    res = evaluation.evaluate_rank(dist, q.pids, g.pids, q.camids, g.camids, max_rank)
  else:
    res = _features_metrics(q.feats, g.feats, q.pids, g.pids, q.camids, g.camids, max_rank,
                            "cosine")
  return summary(res, len(q.pids), len(g.pids)), q, g, dist


@dataclasses.dataclass
class RankedRows:
  """A few queries of a target with their distances to its whole gallery, as the evaluator
  ranked them: all a ranked-list picture needs, kept without the [n, D] features."""

  queries: list  # Records of the chosen queries, in query order
  dist: np.ndarray  # [len(queries), G] float32
  gallery: list  # Records of the gallery rows
  g_pids: np.ndarray
  g_camids: np.ndarray


def ranked_rows(q: Features, g: Features, dist: np.ndarray | None, num: int, seed: int
                ) -> RankedRows | None:
  """`num` queries drawn with `seed` among those with a true match (the same ones whenever the
  same images were read), with their distance rows: the re-ranked `dist` when given, else
  cosine as the evaluator ranks; None when no query can be answered."""
  from retext_jax.tools import visualize_ranks

  try:
    picked = visualize_ranks.choose_queries(q.pids, q.camids, g.pids, g.camids, num, seed)
  except errors.DataError:
    return None
  rows = dist[picked] if dist is not None else evaluation.pairwise_distance(
      q.feats[picked], g.feats, "cosine")
  return RankedRows([q.records[i] for i in picked], np.asarray(rows, np.float32), g.records,
                    g.pids, g.camids)


def _features_metrics(q, g, q_pids, g_pids, q_camids, g_camids, max_rank: int, metric: str
                      ) -> dict:
  """The metrics on the accelerator when there is one (evaluation.device: same numbers), else
  numpy's chunked ranking on the CPU threads."""
  if jax.default_backend() != "cpu":
    from retext_jax.evaluation.device import evaluate_features_jax

    return evaluate_features_jax(q, g, q_pids, g_pids, q_camids, g_camids, max_rank, metric)
  if metric == "dot":
    return evaluation.evaluate_text_features(q, g, q_pids, g_pids, max_rank)
  return evaluation.evaluate_features(q, g, q_pids, g_pids, q_camids, g_camids, max_rank, metric)


def caption_embeddings(embed_tokens: Callable[[np.ndarray, np.ndarray], np.ndarray], records,
                       tokenizer, max_len: int, batch_size: int, what: str
                       ) -> tuple[np.ndarray, np.ndarray]:
  """(embeddings, pids) of every caption of `records`, through `embed_tokens(tokens, mask)`."""
  from input_pipeline import eval_pipeline

  q, q_pids, index, valid = [], [], [], []
  for b in eval_pipeline.make_text_eval_iterator(records, tokenizer, max_len, batch_size,
                                                 process_index=jax.process_index(),
                                                 process_count=jax.process_count()):
    q.append(np.asarray(embed_tokens(b["tokens"], b["token_mask"])))
    q_pids.append(b["pid"])
    index.append(b["index"])
    valid.append(b["valid"])
  if not q:
    raise errors.DataError(f"{what}: no test image has a caption")
  q, q_pids, index = _all_hosts_valid_rows(valid, q, q_pids, index)
  order = np.argsort(index)
  return q[order], q_pids[order]


def text_metrics(embed: FeatureCache, dataset, max_rank: int = 50) -> dict[str, Any]:
  """Every caption of the test split queries every test image (IRRA's protocol)."""
  trained = embed.trained
  g = embed(dataset.test, f"{dataset.name} images")
  q, q_pids = caption_embeddings(trained.token_embeddings, g.records, trained.tokenizer,
                                 trained.config.input.max_text_len, embed.batch_size,
                                 dataset.name)
  res = _features_metrics(q, g.feats, q_pids, g.pids, None, None, max_rank, "dot")
  return summary(res, len(q_pids), len(g.pids))


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
  return {k: float(metrics[k]) for k in SCALARS}


def with_average(results: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
  """Adds "average" over the targets when there are several."""
  if len(results) > 1:
    results["average"] = {k: float(np.mean([r[k] for r in results.values()])) for k in SCALARS}
  return results


class ReIDEvaluator:
  """Image Re-ID on query/gallery targets with the "reid" (or "matching") image features."""

  needs = {"reid": ("reid",), "matching": ("image_embed",)}
  splits = ("query", "gallery")

  def __init__(self, targets: Mapping[str, Any], batch_size: int, max_rank: int = 50,
               features: str = "reid", rerank: bool = False):
    if features not in self.needs:
      raise errors.ConfigError(f"reid evaluator: features must be one of {list(self.needs)}, "
                               f"got {features!r}")
    self.targets, self.batch_size, self.max_rank = dict(targets), batch_size, max_rank
    self.features, self.rerank = features, rerank
    self.predict_fns = self.needs[features]
    self.show, self.show_seed = 0, 0
    self.shown: dict[str, RankedRows] = {}  # of the last run, per target (`keep_ranked`)

  def keep_ranked(self, num: int, seed: int) -> None:
    """From the next run on, keep `ranked_rows` of `num` queries per target in `self.shown`
    (the trainer's TensorBoard ranked lists: nothing is embedded twice); 0 keeps none."""
    if num < 0:
      raise errors.ConfigError(f"config.eval.tb_images={num}: expected 0 (off) or more")
    self.show, self.show_seed = int(num), int(seed)

  def run(self, trained) -> dict[str, dict[str, float]]:
    results, shown = {}, {}
    for name, ds in self.targets.items():
      res, q, g, dist = _reid(FeatureCache(trained, self.features, self.batch_size), ds,
                              self.rerank, self.max_rank)
      results[name] = scalars(res)
      rows = ranked_rows(q, g, dist, self.show, self.show_seed) if self.show else None
      if rows is not None:
        shown[name] = rows
    self.shown = shown
    return with_average(results)


class TextEvaluator:
  """Text-to-image retrieval on captioned test splits (image and text matching embeddings)."""

  predict_fns = ("image_embed", "text_embed")
  splits = ("test",)

  def __init__(self, targets: Mapping[str, Any], batch_size: int, max_rank: int = 50):
    self.targets, self.batch_size, self.max_rank = dict(targets), batch_size, max_rank

  def run(self, trained) -> dict[str, dict[str, float]]:
    return with_average({
        name: scalars(text_metrics(FeatureCache(trained, "matching", self.batch_size), ds,
                                   self.max_rank))
        for name, ds in self.targets.items()})


TYPES = {REID: ReIDEvaluator, TEXT: TextEvaluator}


def from_config(config, targets: Mapping[str, Any], offered: Sequence[str]) -> dict[str, Any]:
  """{name: evaluator} of `config.evals` over the loaded `targets` (`config.data.targets`);
  `offered` are the method's predict functions: an evaluator needing another is an error now,
  not after training, unless its spec says `optional=True` (then it is skipped with a warning:
  e.g. text-to-image in a ReText config run with the text losses off)."""
  out = {}
  for name, spec in config.evals.items():
    spec = dict(spec)
    kind, optional = spec.pop("type", None), spec.pop("optional", False)
    if kind not in TYPES:
      raise errors.UnknownKeyError(f"config.evals.{name}.type={kind!r}; expected one of "
                                   f"{sorted(TYPES)}")
    names = list(spec.pop("targets", None) or targets)
    unknown = [t for t in names if t not in targets]
    if unknown:
      raise errors.UnknownKeyError(f"config.evals.{name}.targets: {unknown} are not in "
                                   f"config.data.targets ({', '.join(targets)})")
    try:
      evaluator = TYPES[kind]({t: targets[t] for t in names}, config.input.eval_batch,
                              config.eval.max_rank, **spec)
    except TypeError as e:
      raise errors.ConfigError(f"config.evals.{name}: {e}") from None
    missing = [f for f in evaluator.predict_fns if f not in offered]
    if missing and optional:
      logging.warning("config.evals.%s (%s) skipped: the model does not offer %s", name, kind,
                      missing)
      continue
    if missing:
      raise errors.ConfigError(f"config.evals.{name} ({kind}) needs {missing}, which the "
                               f"{config.method} model does not offer ({', '.join(offered)})")
    for t, ds in evaluator.targets.items():  # now, not after training
      empty = [split for split in evaluator.splits if not ds.split(split)]
      if empty:
        raise errors.DataError(f"config.evals.{name}: target {t} ({ds.name} at {ds.root}) has "
                               f"no {' and no '.join(empty)} images")
    if isinstance(evaluator, ReIDEvaluator):  # the trainer's pictures (retext_jax.eval_images)
      evaluator.keep_ranked(int(config.eval.get("tb_images", 0)), int(config.get("seed", 0)))
    out[name] = evaluator
  return out


def pixel_baseline(evaluators: Mapping[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
  """The raw-pixel baseline (`raw_pixels`, cosine) on the targets of every image Re-ID
  evaluator, in the shape `evaluate` returns."""
  return {name: with_average({t: scalars(reid_metrics(PixelFeatures(), ds, max_rank=ev.max_rank))
                              for t, ds in ev.targets.items()})
          for name, ev in evaluators.items() if isinstance(ev, ReIDEvaluator)}


def evaluate(evaluators: Mapping[str, Any], trained) -> dict[str, dict[str, dict[str, float]]]:
  """{evaluator name: {target (or "average"): SCALARS}}."""
  return {name: ev.run(trained) for name, ev in evaluators.items()}
