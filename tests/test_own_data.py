"""Your own data: the README's "Your own data" commands on a folder this test writes, a folder
without captions (ReText becomes the Re-ID-only baseline, announced), and the config overrides
that name datasets."""

import csv
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from configs import retext
from input_pipeline import registry
from input_pipeline.synthetic import ensure_benchmark
from retext_jax import errors
from retext_jax.tools import common, extract, query

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUERY_NAME = "query/0007_c1_0000.jpg"  # the README's example query image


def _write_folder(folder, bench, captions: bool) -> None:
  """A custom-reader folder from the tiny synthetic benchmark: source_market's train split
  (with its template captions when `captions`), target_market's query and gallery; the first
  query is copied to the README's example name."""
  rows = []
  train = registry.get_dataset("market1501", f"{bench}/source_market",
                               captions="captions.json" if captions else "")
  target = registry.get_dataset("market1501", f"{bench}/target_market")
  for split, records in (("train", train.train), ("query", target.query),
                         ("gallery", target.gallery)):
    os.makedirs(folder / split, exist_ok=True)
    for i, r in enumerate(records):
      name = QUERY_NAME if split == "query" and i == 0 else \
          f"{split}/{os.path.basename(r.path)}"
      shutil.copy(r.path, folder / name)
      for caption in (r.captions or ("",))[:2]:
        rows.append((name, r.pid, r.camid, split, caption))
  with open(folder / "annotations.csv", "w", newline="") as f:
    csv.writer(f).writerows([("path", "pid", "camid", "split", "caption"), *rows])


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
  return ensure_benchmark(str(tmp_path_factory.mktemp("bench") / "tiny"), "tiny", 0)


def _readme_commands() -> list[str]:
  """The bash block of the README's "Your own data" section, continuation lines joined."""
  text = open(os.path.join(ROOT, "README.md")).read()
  section = text.split("## Your own data: train, evaluate and query on your cameras")[1]
  block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
  return [line.strip() for line in block.splitlines()
          if line.strip() and not line.lstrip().startswith("#")]


def test_readme_own_data_commands_train_evaluate_and_query(bench, tmp_path, capsys):
  folder = tmp_path / "my_cams"
  _write_folder(folder, bench, captions=True)
  lines = _readme_commands()
  assert lines[0].startswith("D=")
  env = {"D": str(folder)}
  check, train, evaluate, ask = [shlex.split(line.replace("$D", env["D"])) for line in lines[1:5]]
  assert "configs/retext.py:custom,data=" + env["D"] in " ".join(train)  # step 2: not run here
  workdir = str(tmp_path / "check")
  check = [a.replace("workdirs/my_cams_check", workdir) for a in check]
  proc = subprocess.run([sys.executable, *check[1:]], cwd=ROOT, capture_output=True, text=True,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.load(open(f"{workdir}/results.json"))
  assert set(results["evals"]) == {"reid"} and set(results["evals"]["reid"]) == {"custom"}
  assert "switched off" not in proc.stderr and "Re-ID data alone" not in proc.stderr
  for argv in (evaluate, ask):  # python -m retext_jax.tools.X ARGS, run in-process
    assert argv[:2] == ["python", "-m"]
    args = [a.replace("workdirs/my_cams", workdir) for a in argv[3:]]
    assert importlib.import_module(argv[2]).main(args) == 0
  # Feature files carry their provenance; a file from another model (here: step 3 of the same
  # run) is refused by `query`, the same model in another folder is not.
  feats, probe = str(tmp_path / "gallery.safetensors"), str(folder / QUERY_NAME)
  assert extract.main(["--workdir", workdir, "--dataset", f"custom:{folder}:gallery",
                       "--out", feats]) == 0
  info = common.load_features(feats)
  assert (info["workdir"], info["step"], info["kind"], info["method"]) == (
      workdir, 6, "reid", "retext")
  assert info["preprocessing"]["image_size"] == [64, 32]
  earlier, moved = tmp_path / "earlier", tmp_path / "moved"
  shutil.copytree(workdir, earlier)
  shutil.rmtree(earlier / "checkpoints" / "6")
  shutil.copytree(workdir, moved)
  capsys.readouterr()
  assert query.main(["--workdir", str(earlier), "--image", probe, "--gallery", feats]) == 2
  line = capsys.readouterr().err.strip().splitlines()[-1]
  assert line.startswith("error: ") and "at step 6" in line and "at step 3" in line, line
  assert workdir in line and str(earlier) in line
  assert query.main(["--workdir", str(moved), "--image", probe, "--gallery", feats]) == 0
  table = json.load(open(f"{workdir}/protocols/custom.json"))
  custom = table["targets"]["custom"]
  assert custom["num_query"] == len(registry.get_dataset("custom", str(folder)).query)
  # The protocol re-reads the folder: the same figures as the training run's last evaluation.
  for k in ("R1", "mAP", "mINP"):
    assert custom[k] == pytest.approx(results["evals"]["reid"]["custom"][k], abs=1e-6)


def test_a_folder_without_captions_trains_retext_on_reid_alone(bench, tmp_path, caplog):
  from retext_jax import train

  folder = tmp_path / "no_captions"
  _write_folder(folder, bench, captions=False)
  config = retext.get_config(f"tiny,data={folder},steps=2")
  with config.unlocked():
    config.eval_every = 0
    config.eval.pixel_baseline = False
  final = train.train_and_evaluate(config, str(tmp_path / "wd"))
  notice = [r.getMessage() for r in caplog.records if "Re-ID data alone" in r.getMessage()]
  assert len(notice) == 1 and "loss.lambda_iam=0.0" in notice[0] and "lambda_rec" in notice[0]
  assert final["step"] == 2 and set(final["evals"]["reid"]) == {"custom"}
  saved = json.load(open(tmp_path / "wd" / "config.json"))  # what the checkpoint trained
  assert saved["loss"]["lambda_iam"] == saved["loss"]["lambda_rec"] == 0.0


def test_data_and_named_dataset_overrides(tmp_path):
  c = retext.get_config(f"custom,data={tmp_path}")
  assert c.name == "retext_custom" and c.data.synthetic_preset == ""
  assert {n: (s.reader, s.root, s.part) for n, s in c.data.sources.items()} == {
      "custom": ("custom", str(tmp_path), "multicam"),
      "custom_captions": ("custom", str(tmp_path), "singlecam")}
  assert list(c.data.targets) == ["custom"] and list(c.evals) == ["reid"]
  with pytest.raises(errors.ConfigError, match="data=/path/to/folder"):
    retext.get_config("custom")
  c = retext.get_config("demo,source.synthetic_captions=none,target.mine=custom:mine")
  assert list(c.data.sources) == ["synthetic_source"]
  assert c.data.targets.mine.root == os.path.abspath("mine")
  assert c.evals.reid.targets == ("synthetic_target", "mine")
  c = retext.get_config("demo,target.synthetic_captions_test=none")
  assert "t2i" not in c.evals  # its only target is gone
  for arg, message in (("demo,source.x=none", "there is no source 'x'"),
                       ("demo,source.x=market1501", "expected READER:ROOT"),
                       ("demo,source.=custom:a", "expected source.NAME")):
    with pytest.raises(errors.UserError, match=message):
      retext.get_config(arg)
