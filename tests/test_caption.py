"""The caption tool: a local VLM (a tiny random LLaVA built here) or the synthetic benchmark's
annotations caption a dataset in batches; the JSONL survives kill -9 without losing or
duplicating a line; the sidecar attaches to the reader's records."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from input_pipeline import registry
from input_pipeline.records import Record
from input_pipeline.synthetic import ensure_benchmark
from retext_jax import errors
from retext_jax.tools import caption

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
  return ensure_benchmark(str(tmp_path_factory.mktemp("bench")), "tiny", 0)


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
  pytest.importorskip("torch", reason="the VLM captioner runs on torch (test extra)")
  from vlm_utils import save_tiny_llava

  folder = str(tmp_path_factory.mktemp("tiny_llava"))
  save_tiny_llava(folder)
  return folder


def _lines(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(x) for x in f]


def test_vlm_captions_every_image_once_and_the_sidecar_attaches(bench, vlm, tmp_path, capsys):
  out, side = tmp_path / "q.jsonl", tmp_path / "captions.json"
  spec = f"market1501:{bench}/target_market:query"
  assert caption.main(["--dataset", spec, "--model", vlm, "--out", str(out), "--sidecar",
                       str(side), "--batch_size", "5", "--max_new_tokens", "4"]) == 0
  rows = _lines(out)
  query = registry.get_dataset("market1501", f"{bench}/target_market").query
  assert sorted(r["path"] for r in rows) == sorted(r.path for r in query)  # each once
  assert all(isinstance(r["caption"], str) and r["caption"] for r in rows)
  ds = registry.get_dataset("market1501", f"{bench}/target_market", captions=str(side))
  by_path = {r["path"]: r["caption"] for r in rows}
  assert all(r.captions == (by_path[r.path],) for r in ds.query)
  assert not any(r.captions for r in ds.gallery)  # only the captioned split
  # A second run has nothing left to do and changes nothing.
  assert caption.main(["--dataset", spec, "--model", vlm, "--out", str(out), "--sidecar",
                       str(side)]) == 0
  assert _lines(out) == rows


def test_batches_and_a_cut_last_line(tmp_path):
  records = [Record(f"/img/{i}.jpg", i, 0, "query") for i in range(7)]
  sizes = []

  def captioner(batch):
    sizes.append(len(batch))
    return [f"person {r.pid}" for r in batch]

  out = tmp_path / "c.jsonl"
  caption.caption_records(records[:4], captioner, str(out), batch_size=3, progress=False)
  assert sizes == [3, 1]
  with open(out, "ab") as f:  # a run killed in the middle of a line
    f.write(b'{"path": "/img/4.jpg", "capt')
  done = caption.caption_records(records, captioner, str(out), batch_size=3, progress=False)
  assert sizes == [3, 1, 3]
  assert [r["path"] for r in _lines(out)] == [r.path for r in records]
  assert done == {r.path: f"person {r.pid}" for r in records}
  with open(out, "a") as f:
    f.write("not json\n")
  with pytest.raises(errors.DataError, match="line 8 is not a caption record"):
    caption.read_done(str(out))


def test_kill_9_then_resume_loses_and_duplicates_nothing(bench, vlm, tmp_path):
  spec = f"market1501:{bench}/target_market"
  args = ["--dataset", spec, "--model", vlm, "--batch_size", "1", "--max_new_tokens", "24"]
  cmd = [sys.executable, "-m", "retext_jax.tools.caption", *args]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  killed = tmp_path / "killed.jsonl"
  proc = subprocess.Popen([*cmd, "--out", str(killed), "--sidecar", str(tmp_path / "k.json")],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  start = time.time()
  while not (killed.exists() and killed.read_bytes().count(b"\n") >= 5):
    assert proc.poll() is None and time.time() - start < 300, "the run ended before the kill"
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  target = registry.get_dataset("market1501", f"{bench}/target_market")
  total = len(target.train) + len(target.query) + len(target.gallery)
  assert killed.read_bytes().count(b"\n") < total
  subprocess.run([*cmd, "--out", str(killed), "--sidecar", str(tmp_path / "k.json")], cwd=ROOT,
                 env=env, check=True, capture_output=True)
  clean = tmp_path / "clean.jsonl"
  subprocess.run([*cmd, "--out", str(clean), "--sidecar", str(tmp_path / "c.json")], cwd=ROOT,
                 env=env, check=True, capture_output=True)
  resumed = _lines(killed)
  assert len(resumed) == len({r["path"] for r in resumed}) == total
  # Greedy decoding: the resumed captions are the uninterrupted run's, line for line.
  assert sorted((r["path"], r["caption"]) for r in resumed) == sorted(
      (r["path"], r["caption"]) for r in _lines(clean))
  assert json.load(open(tmp_path / "k.json")) == json.load(open(tmp_path / "c.json"))


def test_rules_caption_the_synthetic_domains_from_their_annotations(bench, tmp_path):
  side = tmp_path / "s.json"
  assert caption.main(["--dataset", f"market1501:{bench}/source_market", "--rules",
                       "synthetic", "--out", str(tmp_path / "s.jsonl"), "--sidecar",
                       str(side)]) == 0
  meta = json.load(open(os.path.join(bench, "source_market", "identities.json")))
  captions = json.load(open(side))
  for rel, caps in captions.items():
    attrs = meta["identities"][meta["images"][rel]["pid"]]["attributes"]
    assert attrs["upper_colour"] in caps[0] and attrs["lower_type"] in caps[0]
  people = [k for k, v in meta["images"].items() if v["pid"] in meta["identities"]]
  assert sorted(captions) == sorted(people)  # distractors and junk have no annotation
  # The benchmark ships the same sidecar, so CLIP-SCGI's synthetic presets need no pre-step.
  assert json.load(open(os.path.join(bench, "source_market", "captions.json"))) == captions


def test_bad_model_folders_are_one_line(bench, tmp_path, capsys):
  spec = f"market1501:{bench}/target_market:query"
  for folder, expected in ((tmp_path / "none", "does not exist"),
                           (bench, "not an image-text-to-text model")):
    assert caption.main(["--dataset", spec, "--model", str(folder), "--out",
                         str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
