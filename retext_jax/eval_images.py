"""Pictures of each evaluation in TensorBoard (Images tab), so that a run shows how retrieval and
reconstruction improve, not only by how much.

* `ranks/<evaluator>/<target>`: per image Re-ID evaluator and target, `config.eval.tb_images`
  queries with their top-ranked gallery images, drawn as `tools.visualize_ranks` draws them
  (green border: the query's identity, red: another). The queries are drawn with
  `config.seed`, so every evaluation of a run shows the same ones; their distance rows are the
  ones the evaluator just ranked by (`evaluators.RankedRows`): no image is embedded again.
* `reconstruction/<target>`: for methods that reconstruct, as many captioned images of the
  first captioned evaluation target (else of a captioned training source) with fixed patch
  masks, drawn as `tools.visualize_reconstruction` draws them (original / masked /
  reconstructed, with the caption the decoder read).

Only process 0 draws and writes; every process runs the reconstruction (the model may be
sharded over all of them). `config.eval.tb_images=0` switches the pictures off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging

from retext_jax import errors, evaluators, inference, sharding
from retext_jax.methods import base
from retext_jax.tools import visualize_ranks as vranks
from retext_jax.tools import visualize_reconstruction as vrec

TOPK = 10  # ranked gallery images per query, as the tool's default
RECONSTRUCTION_HEIGHT = 256  # panels enlarged to about this many pixels, as the tool's default
SINGLECAM_TAG = "singlecam"  # reconstruction tag of a captioned training source

_logged: set[str] = set()
_inputs: dict[tuple, tuple] = {}  # the fixed reconstruction inputs of the current run


def write(writer, step: int, run: Any, state: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Writes this evaluation's pictures at `step` and returns them ({tag: uint8 [1, H, W, 3]};
  {} on processes other than 0). `run` is the trainer's run (config, evals, method, tokenizer,
  mesh, workdir, sources); call it right after `run.evaluate` on every process."""
  num = int(run.config.eval.get("tb_images", 0))
  if num <= 0:
    return {}
  images = {}
  rec = _reconstruction(run, state, step, num)
  if jax.process_index() != 0:
    return {}
  for name, ev in run.evals.items():
    for target, rows in getattr(ev, "shown", {}).items():
      images[f"ranks/{name}/{target}"] = _array(ranked_sheet(rows))
  if rec is not None:
    images[rec[0]] = _array(rec[1])
  if images:
    writer.write_images(step, images)
  return images


def ranked_sheet(rows: evaluators.RankedRows, topk: int = TOPK,
                 layout: vranks.Layout = vranks.LAYOUT):
  """PIL sheet of the kept queries and their `topk` first gallery images after junk removal."""
  ids_known = bool(np.any(rows.g_pids != -1))
  sheet_rows = []
  for q, d in zip(rows.queries, rows.dist, strict=True):
    known = ids_known and q.pid != -1
    order = vranks.ranked_gallery(d, q.pid, q.camid, rows.g_pids, rows.g_camids, known)
    sheet_rows.append({"query": q, "known": known,
                       "ranked": [(rows.gallery[j], float(d[j])) for j in order[:topk]]})
  return vranks.draw_sheet(sheet_rows, topk, layout)


def _array(sheet) -> np.ndarray:
  return np.asarray(sheet.convert("RGB"), np.uint8)[None]


def _info_once(message: str) -> None:
  if message not in _logged:
    _logged.add(message)
    logging.info("%s", message)


def _captioned(run: Any) -> tuple[str, list]:
  """(tag suffix, captioned records): the first evaluation target with captions, else the
  first captioned training source; ("", []) when there is none."""
  for name, ds in run.sources.targets.items():
    records = [r for split in ("test", "query", "gallery") for r in ds.split(split) if r.captions]
    if records:
      return name, records
  for records, _ in getattr(run.sources, "singlecam", ()):
    records = [r for r in records if r.captions]
    if records:
      return SINGLECAM_TAG, records
  return "", []


def _reconstruction(run: Any, state: Mapping[str, Any], step: int, num: int):
  """(tag, PIL sheet) of `num` fixed captioned images, their fixed masks and the model's
  reconstructions; None (logged once) when the method or the data cannot make one."""
  method = run.method
  if not method.offers(base.RECONSTRUCT):
    _info_once(f"TensorBoard: no reconstruction pictures (the {method.name} model does not "
               "reconstruct)")
    return None
  name, records = _captioned(run)
  if not records:
    _info_once("TensorBoard: no reconstruction pictures (no captioned target or source)")
    return None
  mcfg = method.model_config
  p, (rows, cols) = mcfg.vit.patch_size, mcfg.vit.grid
  h, w = (int(v) for v in run.config.input.image_size)
  if (rows * p, cols * p) != (h, w) or mcfg.vit.patch_stride != p:
    _info_once("TensorBoard: no reconstruction pictures (the patches do not tile the image)")
    return None
  mesh = run.mesh
  trained = inference.TrainedModel(  # as run.evaluate builds it: batches placed on the mesh
      method, method.eval_variables(state, run.config.eval.features), run.config, step,
      run.workdir, run.tokenizer, place=lambda x: sharding.global_batch({"x": x}, mesh)["x"])
  try:
    images, captions, mask = _fixed_inputs(records, trained, num, int(run.config.get("seed", 0)))
  except errors.DataError as e:  # none of the chosen images reads: no picture, no failed run
    _info_once(f"TensorBoard: no reconstruction pictures ({e})")
    return None
  pred = _reconstruct(trained, images, captions, mask, len(mesh.local_devices))
  if jax.process_index() != 0:
    return None
  norm_pix = bool(run.config.loss.get("norm_pix", True))  # what train_step trains with
  panels = vrec.panels(images, pred, mask, p, run.config.input.mean, run.config.input.std,
                       norm_pix)
  scale = max(1, round(RECONSTRUCTION_HEIGHT / h))
  return f"reconstruction/{name}", vrec.draw_sheet(*panels, captions, scale)


def _fixed_inputs(records: Sequence, trained, num: int, seed: int
                  ) -> tuple[np.ndarray, list[str], np.ndarray]:
  """(normalised images, first captions, patch masks) of `num` records and masks drawn with
  `seed` (`visualize_reconstruction.choose`): the same at every evaluation, read once a run."""
  mcfg = trained.method.model_config
  cfg = trained.config.input
  key = (tuple(r.path for r in records), num, seed, mcfg.vit.num_patches, mcfg.num_masked,
         tuple(cfg.image_size), tuple(cfg.mean), tuple(cfg.std))
  if key not in _inputs:
    picked, mask = vrec.choose(len(records), num, mcfg.vit.num_patches, mcfg.num_masked, seed)
    chosen = [records[i] for i in picked]
    images, index = vrec.load_images(chosen, trained, max(len(chosen), 1))
    _inputs.clear()  # one run at a time: keep only its inputs
    _inputs[key] = (images, [chosen[i].captions[0] for i in index], mask[index])
  return _inputs[key]


def _reconstruct(trained, images: np.ndarray, captions: list[str], mask: np.ndarray,
                 multiple: int) -> np.ndarray:
  """The model's patches for `images`, padded (repeating the last row) to a multiple of this
  process's devices, which the mesh splits the batch over."""
  n = len(images)
  take = np.r_[np.arange(n), np.full(-n % multiple, n - 1)].astype(int)
  return np.asarray(trained.reconstruct(images[take], [captions[i] for i in take],
                                        mask[take]))[:n]
