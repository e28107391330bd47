"""The command-line tools on a trained tiny model and the tiny synthetic benchmark.

extract / query / evaluate_protocol / plot_cmc / export: each is run through its `main` and its
output files are checked against independent computations (per-query ranking loop, a numpy
cosine ranking, the framework's own features for the exported extractor).
"""

import importlib
import json
import os

import numpy as np
import pytest
from reader_utils import write_images
from test_evaluation import loop_reference

from input_pipeline import registry
from retext_jax import export, inference, protocols
from retext_jax.tools import common, extract, plot_cmc, query
from retext_jax.tools import evaluate_protocol as evaluate_protocol_tool
from retext_jax.tools import export as export_tool

TOOLS = ("extract", "query", "evaluate_protocol", "plot_cmc", "export", "visualize_ranks",
         "visualize_reconstruction", "convert", "caption")


@pytest.fixture(scope="module")
def trained(trained_workdir):
  workdir, root = trained_workdir
  return inference.load(workdir), root


def _gallery_spec(root):
  return f"market1501:{root}/target_market:gallery"


@pytest.mark.parametrize("tool", TOOLS)
def test_help(tool, capsys):
  module = importlib.import_module(f"retext_jax.tools.{tool}")
  with pytest.raises(SystemExit) as e:
    module.main(["--help"])
  assert e.value.code == 0
  assert f"retext_jax.tools.{tool}" in capsys.readouterr().out


@pytest.mark.parametrize("tool, argv, expected", [
    (query, ["--text", "  ", "--gallery", "g.npy"], "--text is empty"),
    (query, ["--text", "a man", "--gallery", "g.npy", "--topk", "-1"], "--topk -1: expected a "
                                                                       "positive number"),
    (query, ["--text", "a man", "--gallery", "g.npy", "--topk", "x"], "--topk: invalid int"),
    (export_tool, ["--out", "o", "--platforms", "cpu,gpu"], "gpu is 'cuda' or 'rocm'"),
])
def test_argument_mistakes_are_one_error_line(tool, argv, expected, tmp_path, capsys):
  assert tool.main(["--workdir", str(tmp_path), *argv]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err


@pytest.mark.parametrize("content, expected", [("garbage", "is not JSON"), ("[1]", "no CMC"),
                                               ('{"targets": {}}', "no CMC")])
def test_plot_cmc_names_a_file_that_is_not_protocol_results(content, expected, tmp_path, capsys):
  bad = tmp_path / "bad.json"
  bad.write_text(content)
  assert plot_cmc.main(["--results", str(bad), "--out", str(tmp_path / "c.png")]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and str(bad) in err[0] and expected in err[0], err


def test_extract_safetensors_and_npy_hold_features_ids_and_paths(trained, tmp_path):
  model, root = trained
  spec = _gallery_spec(root)
  st, npy = str(tmp_path / "g.safetensors"), str(tmp_path / "g.npy")
  assert extract.main(["--workdir", model.workdir, "--dataset", spec, "--out", st]) == 0
  assert extract.main(["--workdir", model.workdir, "--dataset", spec, "--out", npy]) == 0
  a, b = common.load_features(st), common.load_features(npy)
  gallery = registry.get_dataset("market1501", f"{root}/target_market").gallery
  assert a["paths"] == b["paths"] == [r.path for r in gallery]
  np.testing.assert_array_equal(a["pids"], [r.pid for r in gallery])
  np.testing.assert_array_equal(a["camids"], [r.camid for r in gallery])
  np.testing.assert_array_equal(a["features"], b["features"])
  np.testing.assert_array_equal(a["pids"], b["pids"])
  assert a["kind"] == b["kind"] == "reid" and a["step"] == model.step
  assert a["features"].shape == (len(gallery), model.method.model_config.vit.hidden_size)
  np.testing.assert_allclose(np.linalg.norm(a["features"], axis=1), 1.0, atol=1e-5)
  # The same images one by one through the in-memory API give the same features.
  one = model.embed_records(gallery[:3], "reid", batch_size=8).feats
  np.testing.assert_allclose(one, a["features"][:3], atol=1e-5)


def test_extract_folder_parses_market_names(trained, tmp_path):
  model, root = trained
  out = str(tmp_path / "q.npy")
  folder = f"{root}/target_market/query"
  assert extract.main(["--workdir", model.workdir, "--images", folder, "--out", out]) == 0
  q = common.load_features(out)
  names = sorted(os.listdir(folder))
  assert [os.path.basename(p) for p in q["paths"]] == names
  assert q["pids"].tolist() == [int(n.split("_")[0]) for n in names]
  assert q["camids"].tolist() == [int(n.split("_c")[1][0]) - 1 for n in names]


def test_image_query_ranks_the_gallery_by_cosine(trained, tmp_path, capsys):
  model, root = trained
  feats = str(tmp_path / "g.safetensors")
  extract.main(["--workdir", model.workdir, "--dataset", _gallery_spec(root), "--out", feats])
  g = common.load_features(feats)
  probe = g["paths"][7]  # a gallery image as the query: it must come first, with score 1
  out = str(tmp_path / "hits.json")
  assert query.main(["--workdir", model.workdir, "--image", probe, "--gallery", feats,
                     "--topk", "5", "--json", out]) == 0
  hits = json.load(open(out))["results"]
  expected = np.argsort(-(g["features"] @ g["features"][7]), kind="stable")[:5]
  assert [h["path"] for h in hits] == [g["paths"][i] for i in expected]
  assert hits[0]["path"] == probe and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
  assert all(a["score"] >= b["score"] for a, b in zip(hits, hits[1:], strict=False))
  printed = capsys.readouterr().out
  assert probe in printed and "rank" in printed


def test_text_query_ranks_the_described_person_above_the_others(trained, tmp_path, capsys):
  """A caption describes one identity's attributes: that identity's images must rank above
  the images of the others (area under the ROC curve of the ranked list)."""
  model, root = trained
  spec = f"synthpedes:{root}/SYNTH-PEDES:train"
  feats = str(tmp_path / "match.npy")
  assert extract.main(["--workdir", model.workdir, "--dataset", spec, "--kind", "matching",
                       "--out", feats]) == 0
  records = registry.get_dataset("synthpedes", f"{root}/SYNTH-PEDES").train
  by_pid = {}
  for r in records:
    by_pid.setdefault(r.pid, r)
  aucs = []
  for pid, rec in sorted(by_pid.items()):
    out = str(tmp_path / f"t{pid}.json")
    assert query.main(["--workdir", model.workdir, "--text", rec.captions[0], "--gallery", feats,
                       "--topk", str(len(records)), "--json", out]) == 0
    scores = np.array([h["score"] for h in json.load(open(out))["results"]])
    match = np.array([h["pid"] == pid for h in json.load(open(out))["results"]])
    aucs.append((scores[match][:, None] > scores[~match][None, :]).mean())
  # An untrained or mis-wired model scores ~0.5 (chance).
  assert np.mean(aucs) > 0.9, aucs
  reid = str(tmp_path / "reid.npy")
  extract.main(["--workdir", model.workdir, "--dataset", spec, "--out", reid])
  capsys.readouterr()
  assert query.main(["--workdir", model.workdir, "--text", "a man", "--gallery", reid]) == 2
  assert "--kind matching" in capsys.readouterr().err


def test_protocol_runner_matches_the_per_query_loop(trained, tmp_path):
  model, root = trained
  out = tmp_path / "prot"
  assert evaluate_protocol_tool.main(["--workdir", model.workdir, "--protocol", "synthetic",
                                      "--data_root", root, "--out", str(out)]) == 0
  res = json.load(open(out / "synthetic.json"))
  target = res["targets"]["synthetic target"]
  ds = registry.get_dataset("market1501", f"{root}/target_market")
  q = model.embed_records(ds.query, "reid").feats
  g = model.embed_records(ds.gallery, "reid").feats
  pid = lambda recs: np.array([r.pid for r in recs])
  cam = lambda recs: np.array([r.camid for r in recs])
  ref = loop_reference(1 - q @ g.T, pid(ds.query), pid(ds.gallery), cam(ds.query),
                       cam(ds.gallery), 50)
  assert target["mAP"] == pytest.approx(ref["mAP"], abs=1e-6)
  assert target["R1"] == pytest.approx(ref["cmc"][0], abs=1e-6)
  np.testing.assert_allclose(target["cmc"], ref["cmc"], atol=1e-6)
  table = (out / "synthetic.md").read_text()
  assert f"| {100 * ref['mAP']:.1f} | {100 * ref['cmc'][0]:.1f} |" in table
  assert f"{model.config.name} (step {model.step})" in table
  # plot_cmc reads the runner's JSON: one panel for the one target.
  from PIL import Image

  png = str(tmp_path / "cmc.png")
  assert plot_cmc.main(["--results", str(out / "synthetic.json"), "--out", png]) == 0
  assert Image.open(png).size == (round(4.2 * 120), round(3.6 * 120))


def test_text_protocol_counts_every_caption(trained, tmp_path):
  model, root = trained
  res = protocols.run(model, "synthetic_t2i", root, progress=False)
  target = res["targets"]["synthetic CUHK-PEDES"]
  test = registry.get_dataset("cuhkpedes", f"{root}/CUHK-PEDES").test
  assert target["num_query"] == sum(len(r.captions) for r in test)
  assert target["num_gallery"] == len(test)
  assert 0 < target["R1"] <= target["R5"] <= target["R10"] <= 1


def test_protocol_definitions_and_errors(trained, tmp_path, capsys):
  p1 = protocols.get("p1")
  assert [t.reader for t in p1.targets] == ["prid", "grid", "viper", "ilids"]
  assert all(t.splits == 10 for t in p1.targets)
  assert protocols.get("p2_c3").sources == ("market1501", "msmt17", "cuhksysu")
  assert protocols.get("p3_m").combineall and not protocols.get("p2_m").combineall
  assert [protocols.get(f"sup_{n}").targets[0].root for n in
          ("market1501", "msmt17", "dukemtmcreid", "occluded_duke")] == [
              "market1501", "msmt17", "dukemtmcreid", "occluded_duke"]
  model, root = trained
  # Supervised synthetic protocol: the source domain's own query/gallery and the unseen target.
  res = protocols.run(model, "synthetic_supervised", root, progress=False)
  assert list(res["targets"]) == ["synthetic source", "synthetic target"]
  assert res["average"]["mAP"] == pytest.approx(
      np.mean([t["mAP"] for t in res["targets"].values()]))
  assert res["targets"]["synthetic target"]["num_gallery"] > 0
  rc = evaluate_protocol_tool.main(["--workdir", model.workdir, "--protocol", "p1",
                                    "--data_root", str(tmp_path)])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1 and f"{tmp_path}/prid" in err[0]


def test_markdown_averages_targets():
  res = {"protocol": "p1", "title": "P1", "model": "m", "step": 3, "rerank": False,
         "metrics": ["mAP", "R1"],
         "targets": {"A": {"mAP": 0.5, "R1": 0.25, "splits": [{}] * 10},
                     "B": {"mAP": 0.1, "R1": 0.75, "splits": [{}] * 10}},
         "average": {"mAP": 0.3, "R1": 0.5}}
  table = protocols.markdown([res])
  assert "| Model | A mAP | A R1 | B mAP | B R1 | Average mAP | Average R1 |" in table
  assert "| m (step 3) | 50.0 | 25.0 | 10.0 | 75.0 | 30.0 | 50.0 |" in table
  assert "10 splits of A" in table


def test_plot_cmc_draws_one_panel_per_target(tmp_path, capsys):
  from PIL import Image

  def result(name, scale):
    cmc = list(np.linspace(0.3, 1.0, 20) * scale)
    return {"model": name, "step": 1, "targets": {"A": {"cmc": cmc}, "B": {"cmc": cmc}}}

  paths = []
  for name, scale in (("a", 1.0), ("b", 0.8)):
    paths.append(str(tmp_path / f"{name}.json"))
    json.dump(result(name, scale), open(paths[-1], "w"))
  out = str(tmp_path / "cmc.png")
  assert plot_cmc.main(["--results", *paths, "--out", out]) == 0
  w, h = Image.open(out).size
  assert (w, h) == (round(2 * 4.2 * 120), round(3.6 * 120))
  json.dump({"targets": {"A": {"mAP": 1}}}, open(paths[0], "w"))
  assert plot_cmc.main(["--results", paths[0], "--out", out]) == 2
  assert "no CMC curves" in capsys.readouterr().err


def test_exported_extractor_equals_framework_features(trained, tmp_path):
  import tensorflow as tf

  from input_pipeline import pipeline

  model, root = trained
  out = str(tmp_path / "exported")
  assert export_tool.main(["--workdir", model.workdir, "--out", out]) == 0
  prep = json.load(open(os.path.join(out, export.PREPROCESSING)))
  assert prep["image_size"] == list(model.image_size)
  records = registry.get_dataset("market1501", f"{root}/target_market").gallery[:7]
  framework = model.embed_records(records, "reid", batch_size=8).feats
  pixels = np.stack([pipeline.load_image(tf.constant(r.path), prep["image_size"]).numpy()
                     for r in records])
  extractor = export.load_extractor(out)
  for batch in (slice(0, 1), slice(0, 7), slice(2, 5)):  # the batch dimension is symbolic
    got = extractor(pixels[batch])
    assert np.abs(got - framework[batch]).max() <= 1e-5
  with pytest.raises(ValueError, match="expects pixels"):
    extractor(pixels[:, :10])


def _write_protocol1_targets(root):
  write_images(root / "prid" / "cam_a", [f"person_{i:04d}.png" for i in range(1, 201)])
  write_images(root / "prid" / "cam_b", [f"person_{i:04d}.png" for i in range(1, 206)])
  write_images(root / "grid" / "probe", [f"{i:04d}_{i % 8 + 1}_25004_107_32_130.jpeg"
                                         for i in range(1, 9)])
  write_images(root / "grid" / "gallery", [f"{i:04d}_{(i + 3) % 8 + 1}_25004_108_31_120.jpeg"
                                           for i in range(1, 9)] + ["0000_2_25004_9_10_90.jpeg"])
  write_images(root / "viper" / "cam_a", [f"{i:03d}_45.bmp" for i in range(8)])
  write_images(root / "viper" / "cam_b", [f"{i:03d}_90.bmp" for i in range(8)])
  write_images(root / "ilids" / "Persons", [f"{p:04d}{n:03d}.jpg" for p in range(1, 9)
                                            for n in range(1, 3 + p % 2)])


def test_protocol1_averages_ten_splits_and_embeds_each_image_once(trained, tmp_path,
                                                                   monkeypatch):
  model, _ = trained
  _write_protocol1_targets(tmp_path)
  embedded = []
  original = type(model).embed_records

  def counting(self, records, *args, **kwargs):
    embedded.extend(r.path for r in records)
    return original(self, records, *args, **kwargs)

  monkeypatch.setattr(type(model), "embed_records", counting)
  res = protocols.run(model, "p1", str(tmp_path), progress=False)
  assert len(embedded) == len(set(embedded))  # the splits share the cached features
  assert list(res["targets"]) == ["PRID", "GRID", "VIPeR", "iLIDS"]
  for target in res["targets"].values():
    assert len(target["splits"]) == 10
    assert target["mAP"] == pytest.approx(np.mean([s["mAP"] for s in target["splits"]]))
  assert res["average"]["R1"] == pytest.approx(np.mean([t["R1"] for t in
                                                        res["targets"].values()]))
  ds = registry.get_dataset("viper", str(tmp_path / "viper"), split_id=3)
  q, g = (model.embed_records(x, "reid") for x in (ds.query, ds.gallery))
  ref = loop_reference(1 - q.feats @ g.feats.T, q.pids, g.pids, q.camids, g.camids, 50)
  split = res["targets"]["VIPeR"]["splits"][3]
  assert split["mAP"] == pytest.approx(ref["mAP"], abs=1e-6)
  np.testing.assert_allclose(split["cmc"], ref["cmc"], atol=1e-6)


def test_saved_model_equals_framework_features(trained, tmp_path):
  import tensorflow as tf

  from input_pipeline import pipeline

  model, root = trained
  out = str(tmp_path / "saved_model")
  assert export_tool.main(["--workdir", model.workdir, "--out", out,
                           "--format", "saved_model"]) == 0
  records = registry.get_dataset("market1501", f"{root}/target_market").gallery[:7]
  framework = model.embed_records(records, "reid", batch_size=8).feats
  pixels = np.stack([pipeline.load_image(tf.constant(r.path), model.image_size).numpy()
                     for r in records])
  serve = tf.saved_model.load(out).signatures["serving_default"]
  for batch in (slice(0, 1), slice(0, 7)):
    got = serve(pixels=tf.constant(pixels[batch]))["features"].numpy()
    assert np.abs(got - framework[batch]).max() <= 1e-5
  assert json.load(open(os.path.join(out, export.PREPROCESSING)))["format"] == "tf_saved_model"
