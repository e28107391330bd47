"""The visualisation CLIs: ranked-gallery sheets (border colours against an independent numpy
ranking) and reconstruction panels (masked / visible patches), plus help and one-line errors."""

import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from sheet_utils import check_reconstruction_sheet

from retext_jax import losses
from retext_jax.tools import common
from retext_jax.tools import visualize_ranks as vranks
from retext_jax.tools import visualize_reconstruction as vrec

TOOLS = (vranks, vrec)


def _market(root: str, split: str) -> str:
  return f"market1501:{os.path.join(root, 'target_market')}:{split}"


def _cuhk(root: str) -> str:
  return f"cuhkpedes:{os.path.join(root, 'CUHK-PEDES')}:test"


def _cell_image(sheet: np.ndarray, layout: vranks.Layout, row: int, col: int) -> np.ndarray:
  x, y = layout.origin(row, col)
  b = layout.border
  return sheet[y + b:y + b + layout.image_h, x + b:x + b + layout.image_w]


def _border_colours(sheet: np.ndarray, layout: vranks.Layout, row: int, col: int) -> set:
  """Colours of the four border corners and edge midpoints of a cell."""
  x, y = layout.origin(row, col)
  x1, y1 = x + layout.cell_w - 1, y + layout.image_h + 2 * layout.border - 1
  points = [(x, y), (x1, y), (x, y1), (x1, y1), ((x + x1) // 2, y + 1), (x + 1, (y + y1) // 2)]
  return {tuple(int(v) for v in sheet[py, px]) for px, py in points}


def _resized(path: str, layout: vranks.Layout) -> np.ndarray:
  with Image.open(path) as im:
    img = im.convert("RGB").resize((layout.image_w, layout.image_h), Image.BILINEAR)
  return np.asarray(img)


@pytest.mark.parametrize("tool", TOOLS, ids=lambda t: t.__name__.rsplit(".", 1)[-1])
def test_help_exits_0(tool, capsys):
  with pytest.raises(SystemExit) as e:
    tool.main(["--help"])
  assert e.value.code == 0 and "--workdir" in capsys.readouterr().out


def test_bad_workdir_is_one_error_line_with_exit_code_2(trained_workdir, tmp_path, capsys):
  _, root = trained_workdir
  bad = str(tmp_path / "no_such_workdir")
  for argv in (
      ["--query_dataset", _market(root, "query"), "--gallery_dataset", _market(root, "gallery")],
      ["--dataset", _cuhk(root)],
  ):
    tool = vranks if "--query_dataset" in argv else vrec
    rc = tool.main([*argv, "--workdir", bad, "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len([line for line in err if line.startswith("error:")]) == 1, err
    assert err[-1].startswith("error:") and bad in err[-1]
    assert not (tmp_path / "x.png").exists()


def test_ranks_borders_follow_an_independent_ranking(trained_workdir, tmp_path, capsys):
  workdir, root = trained_workdir
  out, topk = tmp_path / "ranks.png", 5
  rc = vranks.main(["--workdir", workdir, "--query_dataset", _market(root, "query"),
                    "--gallery_dataset", _market(root, "gallery"), "--out", str(out),
                    "--num_queries", "3", "--topk", str(topk), "--seed", "1"])
  stdout = capsys.readouterr().out
  assert rc == 0 and f"wrote {out}" in stdout
  printed = [(int(i), v) for i, v in re.findall(r"^query (\d+) .*: rank-1 (\w+)", stdout, re.M)]
  assert len(printed) == 3

  sheet = np.asarray(Image.open(out).convert("RGB"))
  layout = vranks.LAYOUT
  assert (sheet.shape[1], sheet.shape[0]) == layout.size(3, topk + 1)

  # Independent ranking: plain numpy on the model's features.
  from retext_jax import inference

  trained = inference.load(workdir)
  q_recs = common.records_from_dataset(_market(root, "query"))
  g_recs = common.records_from_dataset(_market(root, "gallery"))
  gal = trained.embed_records(g_recs, "reid", 64, None)
  qry = trained.embed_records([q_recs[i] for i, _ in printed], "reid", 64, None)
  assert len(qry.records) == 3 and len(gal.records) == len(g_recs)
  dist = 1.0 - qry.feats @ gal.feats.T
  for row, ((_, verdict), q) in enumerate(zip(printed, qry.records, strict=True)):
    g = g_recs
    ranked = [j for j in np.argsort(dist[row], kind="stable")
              if g[j].pid != -1 and not (g[j].pid == q.pid and g[j].camid == q.camid)]
    # The tool draws only queries that can be answered: a true match exists after junk removal.
    assert any(g_recs[j].pid == q.pid for j in ranked), q
    assert _border_colours(sheet, layout, row, 0) == {vranks.BLUE}
    assert np.array_equal(_cell_image(sheet, layout, row, 0), _resized(q.path, layout))
    for k, j in enumerate(ranked[:topk]):
      want = vranks.GREEN if g_recs[j].pid == q.pid else vranks.RED
      assert _border_colours(sheet, layout, row, k + 1) == {want}, (row, k)
      drawn = _cell_image(sheet, layout, row, k + 1)
      assert np.array_equal(drawn, _resized(g_recs[j].path, layout))
    assert verdict == ("correct" if g_recs[ranked[0]].pid == q.pid else "wrong")


def test_ranks_with_unknown_ids_are_grey_and_rerank_runs(trained_workdir, tmp_path, capsys):
  workdir, root = trained_workdir
  queries = tmp_path / "queries"
  queries.mkdir()
  src = sorted(os.listdir(os.path.join(root, "target_market", "query")))[:2]
  for n, name in enumerate(src):  # names without Market ids: pid -1
    shutil.copy(os.path.join(root, "target_market", "query", name), queries / f"person_{n}.jpg")
  out = tmp_path / "sub" / "grey.png"
  rc = vranks.main(["--workdir", workdir, "--query_images", str(queries), "--gallery_images",
                    os.path.join(root, "target_market", "bounding_box_test"), "--out", str(out),
                    "--query_index", "1,0", "--topk", "3", "--rerank"])
  stdout = capsys.readouterr().out
  assert rc == 0 and stdout.count("rank-1 unknown") == 2
  sheet = np.asarray(Image.open(out).convert("RGB"))
  assert (sheet.shape[1], sheet.shape[0]) == vranks.LAYOUT.size(2, 4)
  for row in range(2):
    assert _border_colours(sheet, vranks.LAYOUT, row, 0) == {vranks.BLUE}
    for col in range(1, 4):
      assert _border_colours(sheet, vranks.LAYOUT, row, col) == {vranks.GREY}


def test_ranking_removes_junk_and_keeps_distractors():
  g_pids = np.array([5, -1, 0, 5, 7, 5])
  g_cams = np.array([1, 0, 0, 0, 2, 2])
  dist = np.array([0.1, 0.0, 0.2, 0.3, 0.05, 0.3])
  order = vranks.ranked_gallery(dist, 5, 1, g_pids, g_cams)
  assert order.tolist() == [4, 2, 3, 5]  # same id+camera (0) and id -1 (1) removed; ties stable
  assert vranks.ranked_gallery(dist, -1, 1, g_pids, g_cams, ids_known=False).tolist() == \
      [1, 4, 0, 2, 3, 5]
  assert vranks.has_true_match(5, 1, g_pids, g_cams)
  assert not vranks.has_true_match(5, 1, np.array([5, 0]), np.array([1, 2]))


def test_patchify_unpatchify_round_trip_and_norm_pix_inverse():
  rng = np.random.default_rng(0)
  p, (h, w) = 16, (64, 32)
  images = rng.normal(size=(2, h, w, 3)).astype(np.float32)
  patches = np.asarray(losses.patchify(images, p))
  assert np.array_equal(vrec.unpatchify(patches, p, h, w), images)
  assert np.array_equal(vrec.patchify(images, p), patches)
  cols = w // p
  for i in range(patches.shape[1]):  # row-major grid, (row, col, channel) inside a patch
    r, c = divmod(i, cols)
    assert np.array_equal(patches[1, i], images[1, r * p:(r + 1) * p, c * p:(c + 1) * p].ravel())
  mask = np.zeros((2, 8), bool)
  mask[0, [1, 6]] = mask[1, [0, 3, 5]] = True
  pix = vrec.mask_pixels(mask, p, h, w)
  for b, i in zip(*np.nonzero(mask), strict=True):
    r, c = divmod(int(i), cols)
    assert pix[b, r * p:(r + 1) * p, c * p:(c + 1) * p].all()
  assert pix.sum() == mask.sum() * p * p
  # A perfect norm_pix prediction maps back to the original patches with per-patch statistics.
  targets = np.asarray(losses.normalized_patch_targets(patches))
  back = vrec.predicted_patches(images, targets, mask, p, True, "patch")
  np.testing.assert_allclose(back, patches, atol=1e-4)
  vis = vrec.predicted_patches(images, targets, mask, p, True, "visible")
  assert vis.shape == patches.shape and np.isfinite(vis).all()


def test_reconstruction_panels(trained_workdir, tmp_path, capsys):
  workdir, root = trained_workdir
  out, num, scale, seed = tmp_path / "rec.png", 3, 2, 3
  rc = vrec.main(["--workdir", workdir, "--dataset", _cuhk(root), "--out", str(out),
                  "--num", str(num), "--seed", str(seed), "--scale", str(scale)])
  stdout = capsys.readouterr().out
  assert rc == 0 and f"wrote {out}" in stdout

  from retext_jax import inference

  trained = inference.load(workdir)
  vit = trained.method.model_config.vit
  p, (_, cols), n_patch = vit.patch_size, vit.grid, vit.num_patches
  h, w = trained.image_size
  k = trained.method.model_config.num_masked
  records = [r for r in common.records_from_dataset(_cuhk(root)) if r.captions]
  _, masks = vrec.choose(len(records), num, n_patch, k, seed)
  printed = [[int(v) for v in m.split(",") if v.strip()]
             for m in re.findall(r"masked patches \[([\d, ]*)\]", stdout)]
  assert printed == [np.flatnonzero(m).tolist() for m in masks]
  assert all(len(m) == k for m in printed)

  sheet = np.asarray(Image.open(out).convert("RGB"))
  assert len(masks) == num
  check_reconstruction_sheet(sheet, vrec.Layout(h * scale, w * scale), masks, scale, p, cols,
                             n_patch)


def test_reconstruction_mask_ratio_and_errors(trained_workdir, tmp_path, capsys):
  workdir, root = trained_workdir
  base = ["--workdir", workdir, "--out", str(tmp_path / "r.png"), "--num", "1"]
  assert vrec.main([*base, "--dataset", _cuhk(root), "--mask_ratio", "0.25",
                    "--pixel_stats", "visible"]) == 0
  stdout = capsys.readouterr().out
  assert "2/8 patches masked" in stdout and (tmp_path / "r.png").exists()

  for extra, flag in ((["--dataset", _market(root, "query")], "--dataset"),
                      (["--dataset", _cuhk(root), "--mask_ratio", "0.01"], "--mask_ratio")):
    assert vrec.main([*base, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and flag in err[-1], err
