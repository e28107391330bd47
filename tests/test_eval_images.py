"""The trainer's TensorBoard pictures (retext_jax/eval_images.py): ranked lists whose borders
follow an independent ranking of the evaluator's own features, the same queries at every
evaluation, reconstruction sheets with the fixed masks, and event files TensorFlow reads back."""

import logging
import types

import ml_collections
import numpy as np
import pytest
from PIL import Image

from input_pipeline.records import Record, ReIDDataset
from retext_jax import errors, eval_images, evaluators
from retext_jax.tools import visualize_ranks as vranks
from retext_jax.tools import visualize_reconstruction as vrec

LAYOUT = vranks.LAYOUT


def _border_colours(sheet: np.ndarray, row: int, col: int) -> set:
  """Colours of the four corners and two edge midpoints of a cell's border."""
  x, y = LAYOUT.origin(row, col)
  x1, y1 = x + LAYOUT.cell_w - 1, y + LAYOUT.image_h + 2 * LAYOUT.border - 1
  points = [(x, y), (x1, y), (x, y1), (x1, y1), ((x + x1) // 2, y + 1), (x + 1, (y + y1) // 2)]
  return {tuple(int(v) for v in sheet[py, px]) for px, py in points}


def _cell(sheet: np.ndarray, row: int, col: int) -> np.ndarray:
  x, y = LAYOUT.origin(row, col)
  b = LAYOUT.border
  return sheet[y + b:y + b + LAYOUT.image_h, x + b:x + b + LAYOUT.image_w]


def _resized(path: str) -> np.ndarray:
  with Image.open(path) as im:
    return np.asarray(im.convert("RGB").resize((LAYOUT.image_w, LAYOUT.image_h),
                                               Image.BILINEAR))


def _independent_ranking(qf, gf, q: Record, gallery: list[Record]) -> list[int]:
  """Plain numpy: gallery positions by cosine distance, without id -1 and without the query's
  identity seen by the query's camera."""
  dist = 1.0 - gf @ qf / (np.linalg.norm(gf, axis=1) * np.linalg.norm(qf))
  return [j for j in np.argsort(dist, kind="stable")
          if gallery[j].pid != -1 and not (gallery[j].pid == q.pid and gallery[j].camid == q.camid)]


def _assert_borders_follow(sheet, row, q, gallery, ranked):
  assert _border_colours(sheet, row, 0) == {vranks.BLUE}
  assert np.array_equal(_cell(sheet, row, 0), _resized(q.path))
  for k, j in enumerate(ranked[:eval_images.TOPK]):
    want = vranks.GREEN if gallery[j].pid == q.pid else vranks.RED
    assert _border_colours(sheet, row, k + 1) == {want}, (row, k)
    assert np.array_equal(_cell(sheet, row, k + 1), _resized(gallery[j].path)), (row, k)


class _Writer:
  def __init__(self):
    self.images = []

  def write_images(self, step, images):
    self.images.append((step, images))


class _HandMade:
  """Stands in for a trained model: fixed features by image path."""

  def __init__(self, feats: dict[str, np.ndarray]):
    self.feats, self.calls = feats, 0

  def embed_records(self, records, kind, batch_size, progress):
    self.calls += 1
    f = np.stack([self.feats[r.path] for r in records]).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    return evaluators.Features(f, np.asarray([r.pid for r in records]),
                               np.asarray([r.camid for r in records]), list(records))


def _unit(*pairs, dim=8):
  v = np.zeros(dim)
  for i, a in pairs:
    v[i] = a
  return v


def _handmade_target(tmp_path):
  """Two answerable queries whose best match (after junk removal) is known by construction:
  q0's is its own identity (a nearer same-camera image and an id -1 image are junk), q1's is
  another identity; q2 has no true match in the gallery and must never be drawn."""
  spec = {  # name: (pid, camid, feature)
      "q0": (1, 0, _unit((0, 1))), "q1": (2, 0, _unit((3, 1))), "q2": (9, 0, _unit((7, 1))),
      "g0": (1, 0, _unit((0, 1))),  # q0's identity by q0's camera: junk, though the nearest
      "g1": (1, 1, _unit((0, 1), (1, 0.3))),  # q0's true match, nearest after junk removal
      "g2": (2, 1, _unit((3, 1), (4, 0.8))),  # q1's true match, behind g5
      "g3": (3, 2, _unit((0, 1), (2, 0.6))),
      "g4": (-1, 0, _unit((3, 1))),  # id -1: junk for every query
      "g5": (4, 2, _unit((3, 1), (5, 0.3))),  # q1's best: another identity
      "g6": (0, 1, _unit((6, 1))),  # a distractor (id 0) stays in the ranking
  }
  rng = np.random.default_rng(0)
  records, feats = {}, {}
  for name, (pid, cam, f) in spec.items():
    path = str(tmp_path / f"{name}.png")
    Image.fromarray(rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)).save(path)
    records[name] = Record(path, pid, cam, "query" if name[0] == "q" else "gallery")
    feats[path] = f
  ds = ReIDDataset("handmade", str(tmp_path),
                   query=[records[n] for n in ("q0", "q1", "q2")],
                   gallery=[records[f"g{i}"] for i in range(7)])
  return ds, feats


def _run(evals, num, method=None):
  method = method or types.SimpleNamespace(name="handmade", offers=lambda fn: False)
  config = ml_collections.ConfigDict(dict(seed=0, eval=dict(tb_images=num)))
  return types.SimpleNamespace(config=config, evals=evals, method=method)


def test_first_ranked_cell_is_green_exactly_when_the_best_match_is_the_query(tmp_path, caplog):
  ds, feats = _handmade_target(tmp_path)
  model = _HandMade(feats)
  ev = evaluators.ReIDEvaluator({"hand": ds}, batch_size=4)
  ev.keep_ranked(3, seed=0)
  caplog.set_level(logging.INFO)
  writer, sheets = _Writer(), []
  for step in (0, 10):
    ev.run(model)
    sheets.append(eval_images.write(writer, step, _run({"reid": ev}, 3), {}))
  assert model.calls == 4  # query and gallery once per evaluation: nothing embedded again
  assert [s for s, _ in writer.images] == [0, 10]
  assert all(list(s) == ["ranks/reid/hand"] for s in sheets)  # no reconstruction: skipped
  assert caplog.text.count("the handmade model does not reconstruct") == 1  # logged once
  sheet = sheets[0]["ranks/reid/hand"]
  assert sheet.dtype == np.uint8 and sheet.shape[0] == 1
  sheet = sheet[0]
  assert (sheet.shape[1], sheet.shape[0]) == LAYOUT.size(2, eval_images.TOPK + 1)  # q2 left out
  q = {r.path: r for r in ds.query}
  g = ds.gallery
  shown = [r.path for r in ev.shown["hand"].queries]
  assert shown == [ds.query[0].path, ds.query[1].path]
  ranked = [_independent_ranking(feats[p], np.stack([feats[r.path] for r in g]), q[p], g)
            for p in shown]
  assert ranked[0][0] == 1 and ranked[1][0] == 5  # by construction: g1 (same id), g5 (other)
  for row, (path, order) in enumerate(zip(shown, ranked, strict=True)):
    _assert_borders_follow(sheet, row, q[path], g, order)
  assert _border_colours(sheet, 0, 1) == {vranks.GREEN}
  assert _border_colours(sheet, 1, 1) == {vranks.RED}
  assert np.array_equal(sheets[1]["ranks/reid/hand"], sheets[0]["ranks/reid/hand"])

  # 0 switches the pictures off, and the evaluator keeps no rows.
  ev.keep_ranked(0, seed=0)
  ev.run(model)
  assert ev.shown == {} and eval_images.write(writer, 20, _run({"reid": ev}, 0), {}) == {}
  assert len(writer.images) == 2
  with pytest.raises(errors.ConfigError, match="tb_images"):
    ev.keep_ranked(-1, seed=0)


def test_true_match_mask_agrees_with_has_true_match():
  rng = np.random.default_rng(1)
  g_pids, g_cams = rng.integers(-1, 6, 60), rng.integers(-1, 3, 60)
  q_pids, q_cams = rng.integers(-1, 8, 40), rng.integers(-1, 3, 40)
  want = [vranks.has_true_match(int(p), int(c), g_pids, g_cams)
          for p, c in zip(q_pids, q_cams, strict=True)]
  assert vranks.true_match_mask(q_pids, q_cams, g_pids, g_cams).tolist() == want
  assert 0 < sum(want) < len(want)


def test_trained_tiny_pictures_in_event_files(trained_workdir, tmp_path):
  from clu import metric_writers
  from event_utils import image_summaries
  from sheet_utils import check_reconstruction_sheet

  from retext_jax import data, inference, sharding

  workdir, _ = trained_workdir
  trained = inference.load(workdir)
  config = ml_collections.ConfigDict(trained.config.to_dict())
  num = 3
  config.eval.tb_images = num
  targets = data.load_targets(config)
  evals = evaluators.from_config(config, targets, list(trained.method.offered))
  run = types.SimpleNamespace(
      config=config, evals=evals, method=trained.method, tokenizer=None,
      mesh=sharding.make_mesh(), workdir=workdir,
      sources=types.SimpleNamespace(targets=targets, singlecam=[]))
  writer = metric_writers.create_default_writer(str(tmp_path))
  written = {}
  for step in (5, 6):
    evaluators.evaluate(evals, trained)
    written[step] = eval_images.write(writer, step, run, trained.variables)
  writer.flush()

  events = image_summaries(str(tmp_path))
  tags = {"ranks/reid/synthetic_target", "ranks/in_domain/synthetic_source",
          "reconstruction/synthetic_captions_test"}
  assert set(events) == {(t, s) for t in tags for s in (5, 6)}
  for (tag, step), image in events.items():
    assert np.array_equal(image, written[step][tag][0]), (tag, step)  # PNG is lossless

  # Ranked lists: borders follow an independent numpy ranking of the model's features.
  for name, target in (("reid", "synthetic_target"), ("in_domain", "synthetic_source")):
    rows = evals[name].shown[target]
    assert len(rows.queries) == num
    sheet = events[(f"ranks/{name}/{target}", 6)]
    gallery = targets[target].gallery
    gal = trained.embed_records(gallery, "reid", 64, None)
    qry = trained.embed_records(rows.queries, "reid", 64, None)
    assert len(gal.records) == len(gallery)
    for row, q in enumerate(rows.queries):
      _assert_borders_follow(sheet, row, q, gallery,
                             _independent_ranking(qry.feats[row], gal.feats, q, gallery))

  # Reconstruction: the masks of visualize_reconstruction.choose (seed = config.seed) over the
  # captioned test images, grey where masked, the original wherever visible.
  vit = trained.method.model_config.vit
  p, (_, cols), n_patch = vit.patch_size, vit.grid, vit.num_patches
  h, w = trained.image_size
  captioned = [r for r in targets["synthetic_captions_test"].test if r.captions]
  _, masks = vrec.choose(len(captioned), num, n_patch, trained.method.model_config.num_masked,
                         config.seed)
  scale = max(1, round(eval_images.RECONSTRUCTION_HEIGHT / h))
  layout = vrec.Layout(h * scale, w * scale)
  sheet = events[("reconstruction/synthetic_captions_test", 6)]
  assert len(masks) == num
  check_reconstruction_sheet(sheet, layout, masks, scale, p, cols, n_patch)
