"""The evaluation protocols of domain-generalisable and text-based Re-ID, and their runner.

Each protocol names its training sources (what `configs/retext.py` trains on) and its targets:
the registered reader, the folder under the data root (torchreid / IRRA layouts) and, for the
small Protocol-1 targets, the 10 splits averaged as papers do (docs/protocols.md).
`run` evaluates a trained model and returns the JSON-able results; `markdown` renders the table
in the layout papers use (mAP and Rank-1 per target, plus the average).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from retext_jax import errors

REID, TEXT = "reid", "text"  # tasks (and evaluator types): query/gallery Re-ID, captions -> images
SCALARS = ("R1", "R5", "R10", "mAP", "mINP")  # metric names everywhere (fractions)


@dataclasses.dataclass(frozen=True)
class Target:
  name: str  # column title
  reader: str  # input_pipeline registry name
  root: str  # folder under the data root
  splits: int = 1  # > 1: evaluated on split_id 0..splits-1 and averaged


@dataclasses.dataclass(frozen=True)
class Protocol:
  title: str
  task: str  # REID (query/gallery, same-camera matches removed) | TEXT (captions -> images)
  sources: tuple[str, ...]  # registry names of the training sources (folders of the same name)
  targets: tuple[Target, ...]
  combineall: bool = False  # Protocol-3: the sources' query and gallery images train too
  supervised: bool = False  # train on a dataset's train split, test on its query/gallery

  @property
  def metrics(self) -> tuple[str, ...]:
    """The columns papers report for this task."""
    return ("mAP", "R1") if self.task == REID else SCALARS


_M, _MS, _CS, _C3 = (Target("Market-1501", "market1501", "market1501"),
                     Target("MSMT17", "msmt17", "msmt17"),
                     Target("CUHK-SYSU", "cuhksysu", "cuhksysu"),
                     Target("CUHK03", "cuhk03_np", "cuhk03_np"))
_P1_TARGETS = tuple(Target(n, r, r, splits=10) for n, r in
                    (("PRID", "prid"), ("GRID", "grid"), ("VIPeR", "viper"), ("iLIDS", "ilids")))


def _leave_one_out(target: Target, protocol: int) -> Protocol:
  sources = tuple(t.reader for t in (_M, _MS, _CS, _C3) if t != target)
  names = "+".join({"market1501": "M", "msmt17": "MS", "cuhksysu": "CS", "cuhk03_np": "C3"}[s]
                   for s in sources)
  part = "train splits" if protocol == 2 else "all images"
  return Protocol(f"Protocol-{protocol}: {names} ({part}) -> {target.name}", REID, sources,
                  (target,), combineall=protocol == 3)


PROTOCOLS: dict[str, Protocol] = {
    "p1": Protocol("Protocol-1: M+C2+C3+CS (all images) -> PRID, GRID, VIPeR, iLIDS "
                   "(10 splits each)", REID, ("market1501", "cuhk02", "cuhk03_np", "cuhksysu"),
                   _P1_TARGETS, combineall=True),
    **{f"p{p}_{k}": _leave_one_out(t, p) for p in (2, 3)
       for k, t in (("m", _M), ("ms", _MS), ("c3", _C3))},
    # Supervised Re-ID (CLIP-SCGI's, CLIP-ReID's and TransReID's tables).
    **{f"sup_{t.reader}": Protocol(f"Supervised: {t.name}", REID, (t.reader,), (t,),
                                   supervised=True)
       for t in (_M, _MS, Target("DukeMTMC-reID", "dukemtmcreid", "dukemtmcreid"),
                 Target("Occluded-Duke", "occluded_duke", "occluded_duke"))},
    "m_to_ms": Protocol("Market-1501 -> MSMT17", REID, ("market1501",), (_MS,)),
    "ms_to_m": Protocol("MSMT17 -> Market-1501", REID, ("msmt17",), (_M,)),
    "m_to_d": Protocol("Market-1501 -> DukeMTMC-reID", REID, ("market1501",),
                       (Target("DukeMTMC-reID", "dukemtmcreid", "dukemtmcreid"),)),
    "d_to_m": Protocol("DukeMTMC-reID -> Market-1501", REID, ("dukemtmcreid",), (_M,)),
    "t2i_cuhkpedes": Protocol("Text-to-image: CUHK-PEDES", TEXT, ("cuhkpedes",),
                              (Target("CUHK-PEDES", "cuhkpedes", "CUHK-PEDES"),)),
    "t2i_icfgpedes": Protocol("Text-to-image: ICFG-PEDES", TEXT, ("icfgpedes",),
                              (Target("ICFG-PEDES", "icfgpedes", "ICFG-PEDES"),)),
    "t2i_rstpreid": Protocol("Text-to-image: RSTPReid", TEXT, ("rstpreid",),
                             (Target("RSTPReid", "rstpreid", "RSTPReid"),)),
    # The synthetic benchmark (README, "The synthetic pedestrian benchmark"): roots are under
    # its folder.
    "synthetic": Protocol("Synthetic: source_market + SYNTH-PEDES -> target_market", REID,
                          ("market1501",), (Target("synthetic target", "market1501",
                                                   "target_market"),)),
    "synthetic_supervised": Protocol(
        "Synthetic supervised: source_market train -> its query/gallery, and the unseen "
        "target_market", REID, ("market1501",),
        (Target("synthetic source", "market1501", "source_market"),
         Target("synthetic target", "market1501", "target_market")), supervised=True),
    "synthetic_t2i": Protocol("Synthetic text-to-image: CUHK-PEDES layout", TEXT, ("synthpedes",),
                              (Target("synthetic CUHK-PEDES", "cuhkpedes", "CUHK-PEDES"),)),
    # Your own data: a `custom`-reader folder (annotations.csv / .json); --data_root is that
    # folder itself. Query/gallery Re-ID, and text-to-image on its captioned test split.
    "custom": Protocol("Your own data: query -> gallery", REID, ("custom",),
                       (Target("custom", "custom", ""),)),
    "custom_t2i": Protocol("Your own data: text-to-image on the captioned test split", TEXT,
                           ("custom",), (Target("custom", "custom", ""),)),
}


def get(name: str) -> Protocol:
  if name not in PROTOCOLS:
    raise errors.UnknownKeyError(
        f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS)}")
  return PROTOCOLS[name]


# ------------------------------------------------------------------------------------- runner


def _mean(runs: Sequence[dict], keys: Sequence[str]) -> dict:
  out = {k: float(np.mean([r[k] for r in runs])) for k in keys}
  out["cmc"] = np.mean([r["cmc"] for r in runs], axis=0).tolist()
  return out


def run(trained, name: str, data_root: str, batch_size: int = 64, rerank: bool = False,
        max_rank: int = 50, progress: bool = True) -> dict:
  """Evaluates `trained` (an `inference.TrainedModel`) on protocol `name`; JSON-able results.

  Metrics are fractions; a target with several splits reports their mean (and each split).
  """
  from input_pipeline import registry
  from retext_jax import evaluators

  protocol = get(name)
  if max_rank < 10:
    raise errors.ConfigError(f"max_rank must be at least 10 (CMC up to rank 10), got {max_rank}")
  if rerank and protocol.task == TEXT:
    raise errors.ConfigError("--rerank applies to Re-ID protocols, not text-to-image")
  targets = {}
  for t in protocol.targets:
    root = os.path.join(data_root, t.root)
    if not os.path.exists(root):
      raise errors.MissingFileError(f"protocol {name}: {t.name} folder {root} does not exist "
                                    "(set --data_root to the parent of the dataset folders)")
    runs = []
    embed = evaluators.FeatureCache(trained, "reid" if protocol.task == REID else "matching",
                                    batch_size, progress)
    for split in range(t.splits):
      ds = registry.get_dataset(t.reader, root, **({"split_id": split} if t.splits > 1 else {}))
      runs.append(evaluators.reid_metrics(embed, ds, rerank, max_rank) if protocol.task == REID
                  else evaluators.text_metrics(embed, ds, max_rank))
    targets[t.name] = {**_mean(runs, SCALARS), **({"splits": runs} if t.splits > 1 else
                                                {k: runs[0][k] for k in ("num_query",
                                                                         "num_gallery")})}
  out = {"protocol": name, "title": protocol.title, "task": protocol.task, "rerank": rerank,
         "workdir": trained.workdir, "step": trained.step, "model": trained.config.name,
         "method": trained.method.name,
         "metrics": list(protocol.metrics), "targets": targets}
  if len(targets) > 1:
    out["average"] = {k: float(np.mean([r[k] for r in targets.values()])) for k in SCALARS}
  return out


def markdown(results: Sequence[dict]) -> str:
  """One table for one or more results of the same protocol (a row each), in percent."""
  first = results[0]
  if any(r["protocol"] != first["protocol"] for r in results):
    raise errors.ConfigError("markdown: all results must come from the same protocol")
  metrics = first["metrics"]
  columns = [(t, m) for t in first["targets"] for m in metrics]
  if "average" in first:
    columns += [("Average", m) for m in metrics]
  header = "| Model | " + " | ".join(f"{t} {m}" for t, m in columns) + " |"
  lines = [f"**{first['title']}**", "", header, "|" + "---|" * (len(columns) + 1)]
  for r in results:
    label = f"{r['model']} (step {r['step']}{', re-ranked' if r['rerank'] else ''})"
    cells = [100 * (r["average"] if t == "Average" else r["targets"][t])[m] for t, m in columns]
    lines.append(f"| {label} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
  splits = {t: len(v["splits"]) for t, v in first["targets"].items() if "splits" in v}
  if splits:
    lines += ["", "Mean over " + ", ".join(f"{n} splits of {t}" for t, n in splits.items()) + "."]
  return "\n".join(lines) + "\n"
