"""One restore path for every method: `--mode=eval` and every tool work from the workdir alone,
after the training data folders are renamed away and the pretrained init folders deleted; a
tool that needs what a model does not offer (a text query on BoT) says so in one line."""

import glob
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from retext_jax.models import pretrained, vit
from retext_jax.tools import (
    evaluate_protocol,
    export,
    extract,
    query,
    visualize_ranks,
    visualize_reconstruction,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _converted_vit(folder):
  """A converted ViT-Ti/6 at 64x32 (random weights, the converted-folder format)."""
  cfg = vit.vit_config("tiny", 16, image_size=(64, 32), num_layers=6)
  params = vit.ViT(cfg).init(jax.random.key(3), jnp.zeros((1, 64, 32, 3)))["params"]
  pretrained.save_converted(folder, "vit", params, cfg)


# What each method offers the text tools: extract --kind matching, a text query, the
# text-to-image protocol, reconstructions.
TEXT_TOOLS = {"retext": (True, True, True, True), "bot": (False, False, False, False),
              "clip_scgi": (True, True, True, False)}


@pytest.fixture(scope="module", params=sorted(TEXT_TOOLS))
def stripped(request, tmp_path_factory):
  """(method, workdir, synthetic root) of a tiny run whose sources and init files are gone."""
  method, tmp = request.param, tmp_path_factory.mktemp(request.param)
  wd, cache = tmp / "wd", tmp / "cache"
  init = {}
  extra = []
  if method in ("retext", "bot"):  # CLIP-SCGI's tiny preset starts from scratch
    init["image"] = tmp / "init_vit"
    _converted_vit(init["image"])
    extra.append("--config.model.stem=patch")  # a pretrained ViT has a patch embedding
  if method == "retext":
    init["text"] = tmp / "init_text"
    shutil.copytree(pretrained.minilm_path(), init["text"])
  cmd = [sys.executable, "-m", "retext_jax.main", f"--config=configs/{method}.py:tiny",
         f"--workdir={wd}", f"--config.data.cache_dir={cache}",
         *(f"--config.init.{k}={v}" for k, v in init.items()), *extra]
  proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  if init:
    assert "params loaded (image_encoder" in proc.stderr
  for folder in init.values():
    shutil.rmtree(folder)
  root = cache / "tiny_seed0"
  os.rename(root / "SYNTH-PEDES", root / "SYNTH-PEDES.away")
  if method in ("clip_scgi", "retext"):  # source_market's query/gallery are evaluation data
    # (CLIP-SCGI: supervised; ReText: the in-domain evaluator); only its train split goes
    os.rename(root / "source_market" / "bounding_box_train", root / "train.away")
    os.mkdir(root / "source_market" / "bounding_box_train")
  else:
    os.rename(root / "source_market", root / "source_market.away")
  return method, str(wd), str(root)


def test_eval_mode_rebuilds_the_model_from_the_checkpoint_alone(stripped):
  method, wd, _ = stripped
  cache = os.path.join(os.path.dirname(wd), "cache")
  cmd = [sys.executable, "-m", "retext_jax.main", f"--config=configs/{method}.py:tiny",
         f"--workdir={wd}", f"--config.data.cache_dir={cache}", "--mode=eval"]
  proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  trained = json.load(open(os.path.join(wd, "results.json")))
  again = json.load(open(os.path.join(wd, "results_eval_latest.json")))
  assert trained["method"] == again["method"] == method
  assert again["evals"]["reid"]["synthetic_target"] == pytest.approx(
      trained["evals"]["reid"]["synthetic_target"], abs=1e-6)


def _error(capsys) -> str:
  lines = capsys.readouterr().err.strip().splitlines()
  assert lines and lines[-1].startswith("error: "), lines
  return lines[-1]


def test_every_tool_runs_on_the_stripped_workdir(stripped, tmp_path, capsys):
  method, wd, root = stripped
  gallery = f"market1501:{root}/target_market:gallery"
  probe = sorted(glob.glob(f"{root}/target_market/query/*.jpg"))[0]
  feats = str(tmp_path / "g.safetensors")
  assert extract.main(["--workdir", wd, "--dataset", gallery, "--out", feats]) == 0
  assert query.main(["--workdir", wd, "--image", probe, "--gallery", feats, "--topk", "3"]) == 0
  assert evaluate_protocol.main(["--workdir", wd, "--protocol", "synthetic",
                                 "--out", str(tmp_path)]) == 0
  # The protocol runner and the trainer's evaluators share their metric code.
  during = json.load(open(os.path.join(wd, "results.json")))["evals"]
  protocol = json.load(open(tmp_path / "synthetic.json"))["targets"]["synthetic target"]
  for k in ("R1", "R5", "R10", "mAP", "mINP"):
    assert protocol[k] == pytest.approx(during["reid"]["synthetic_target"][k], abs=1e-6), k
  assert visualize_ranks.main(["--workdir", wd, "--query_dataset",
                               f"market1501:{root}/target_market:query", "--gallery_dataset",
                               gallery, "--num_queries", "2", "--topk", "3",
                               "--out", str(tmp_path / "ranks.png")]) == 0
  assert export.main(["--workdir", wd, "--out", str(tmp_path / "exported")]) == 0
  text_tools = [
      (extract.main, ["--dataset", gallery, "--kind", "matching",
                      "--out", str(tmp_path / "m.safetensors")]),
      (query.main, ["--text", "a man in a red shirt", "--gallery_dataset", gallery]),
      (evaluate_protocol.main, ["--protocol", "synthetic_t2i", "--out", str(tmp_path)]),
      (visualize_reconstruction.main, ["--dataset", f"cuhkpedes:{root}/CUHK-PEDES:test",
                                       "--out", str(tmp_path / "rec.png")]),
  ]
  capsys.readouterr()
  for (main, args), offered in zip(text_tools, TEXT_TOOLS[method], strict=True):
    rc = main(["--workdir", wd, *args])
    if offered:
      assert rc == 0, (main.__module__, capsys.readouterr().err[-2000:])
      if main is evaluate_protocol.main and "t2i" in during:
        t2i = json.load(open(tmp_path / "synthetic_t2i.json"))["targets"]["synthetic CUHK-PEDES"]
        trained = during["t2i"]["synthetic_captions_test"]
        assert all(t2i[k] == pytest.approx(trained[k], abs=1e-6) for k in trained), (t2i, trained)
    else:  # e.g. BoT has no text tower, only ReText a decoder: one line that says so
      assert rc == 2, main.__module__
      line = _error(capsys)
      assert f"{method} model" in line and ("offers no" in line or "no reconstruction" in line)


def test_abandoned_orbax_reads_are_dropped_and_other_ignored_exceptions_still_print(monkeypatch):
  """The filter installed before a restore drops only what orbax leaves behind after a failed
  read; any other exception Python ignores reaches the previous hook."""
  import logging
  import types

  from retext_jax import checkpointing

  seen = []
  monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
  checkpointing._silence_abandoned_reads()
  checkpointing._silence_abandoned_reads()  # installed once

  def unraisable(exc, obj):
    sys.unraisablehook(types.SimpleNamespace(exc_type=type(exc), exc_value=exc,
                                             exc_traceback=None, err_msg=None, object=obj))

  orbax_read = types.SimpleNamespace(cr_code=types.SimpleNamespace(
      co_filename="/site-packages/orbax/checkpoint/_src/serialization/serialization.py"))
  ours = types.SimpleNamespace(cr_code=types.SimpleNamespace(co_filename="/src/retext_jax/x.py"))
  unraisable(Exception("Encountered error while reading array index"), orbax_read)
  unraisable(RuntimeError("Event loop is closed"), None)
  kept = [ValueError("a real bug"), RuntimeError("another runtime error")]
  unraisable(kept[0], ours)
  unraisable(kept[1], None)
  assert seen == kept

  def record(message, exc=None):
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None,
                             (type(exc), exc, None) if exc else None)

  never = "Future exception was never retrieved\nfuture: <Future finished exception=ValueError("
  assert checkpointing._orbax_leftover(record(never + "'OUT_OF_RANGE: ... in OCDBT database')>"))
  assert not checkpointing._orbax_leftover(record(never + "'something of ours')>"))
  assert not checkpointing._orbax_leftover(record("Unclosed client session /orbax/"))
