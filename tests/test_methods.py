"""The method interface: methods chosen by name, a method from outside the package trained by the
unchanged trainer, internal errors keeping their traceback, and the masked-patch count."""

import json
import os
import re
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from input_pipeline import masking, records
from input_pipeline.pipeline import InputConfig
from retext_jax import errors, evaluators, methods
from retext_jax.methods import base

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")


def test_methods_are_chosen_by_name_or_module_path():
  assert methods.get("retext").name == "retext" and methods.get("bot").name == "bot"
  sys.path.insert(0, TESTS)
  try:
    assert methods.get("example_methods.cosface").name == "cosface"
  finally:
    sys.path.remove(TESTS)
  with pytest.raises(errors.UnknownKeyError, match="built-in methods: retext, bot, clip_scgi"):
    methods.get("retxt")
  with pytest.raises(errors.ConfigError, match="defines no METHOD"):
    methods.get("os.path")


def test_trainer_and_step_name_no_method():
  for name in ("train.py", "train_step.py"):
    with open(os.path.join(ROOT, "retext_jax", name)) as f:
      code = f.read()
    found = re.findall(r"ReText|BoT|bnneck|lambda_|queue|momentum|methods\.retext|methods\.bot",
                       code)
    assert not found, (name, found)


def _run(config, workdir, cache, *extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=TESTS)
  cmd = [sys.executable, "-m", "retext_jax.main", f"--config={config}", f"--workdir={workdir}",
         f"--config.data.cache_dir={cache}", *extra]
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_a_new_method_folder_trains_through_the_unchanged_trainer(tmp_path):
  wd, cache = tmp_path / "wd", tmp_path / "cache"
  proc = _run("configs/bot.py:tiny", wd, cache, "--config.method=example_methods.cosface")
  assert proc.returncode == 0, proc.stderr[-3000:]
  logged = re.findall(r"loss/cosface=([0-9.]+)", proc.stderr)
  assert len(logged) == 3 and all(np.isfinite(float(v)) for v in logged)
  res = json.load(open(wd / "results.json"))
  assert res["method"] == "example_methods.cosface" and res["step"] == 6
  assert 0 < res["evals"]["reid"]["synthetic_target"]["mAP"] <= 1
  # Its checkpoint names the method: evaluation rebuilds it from the metadata alone.
  again = _run("configs/bot.py:tiny", wd, cache, "--mode=eval")
  assert again.returncode == 0, again.stderr[-3000:]
  ev = json.load(open(wd / "results_eval_latest.json"))
  assert ev["method"] == "example_methods.cosface"
  assert ev["evals"]["reid"]["synthetic_target"] == pytest.approx(
      res["evals"]["reid"]["synthetic_target"], abs=1e-6)


def test_internal_errors_keep_their_traceback_user_errors_are_one_line(tmp_path):
  bug = _run("configs/bot.py:tiny", tmp_path / "a", tmp_path / "cache",
             "--config.method=example_methods.buggy", "--config.eval_every=0")
  assert bug.returncode not in (0, 2)
  assert "Traceback" in bug.stderr and "Size of label" in bug.stderr
  assert not [x for x in bug.stderr.splitlines() if x.startswith("error:")]
  missing = _run("configs/bot.py:tiny", tmp_path / "b", tmp_path / "cache",
                 "--config.method=example_methods.buggy", "--config.data.synthetic_preset=",
                 "--config.data.root=/nonexistent/reid")
  assert missing.returncode == 2 and "Traceback" not in missing.stderr
  lines = [x for x in missing.stderr.splitlines() if x.startswith("error:")]
  assert len(lines) == 1 and "/nonexistent/reid/source_market does not exist" in lines[0]


def test_nan_at_a_non_log_step_is_caught_before_it_is_saved_and_a_profile_is_written(tmp_path):
  # Metrics stay on the device between log steps; the NaN at step 5 (neither a log nor a
  # checkpoint step) must still stop the run at the step-6 checkpoint, before it is written.
  wd = tmp_path / "wd"
  proc = _run("configs/bot.py:tiny,profile=1", wd, tmp_path / "cache",
              "--config.method=example_methods.nan_at_step", "--config.total_steps=8",
              "--config.log_every=4", "--config.checkpoint_every=3", "--config.eval_every=0")
  assert proc.returncode == 2, proc.stderr[-3000:]
  line = [x for x in proc.stderr.splitlines() if x.startswith("error:")][0]
  assert "non-finite loss at step 5:" in line and "loss/total=nan" in line
  saved = sorted(int(n) for n in os.listdir(wd / "checkpoints") if n.isdigit())
  assert saved == [3]
  # profile=1 traced step 4 (three steps after the start, compilation excluded).
  traces = list((wd / "plugins" / "profile").glob("*/*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0


def _retext_config(image_size, mask_ratio):
  from configs import retext

  c = retext.get_config("tiny,lambda_iam=0,lambda_sp=0")
  with c.unlocked():
    c.input.image_size, c.input.mask_ratio = image_size, mask_ratio
    c.init.text = "minilm"
  return c


def test_masked_patch_count_is_one_rule_where_ratio_times_patches_ends_in_half():
  # 240x112 with 16-pixel patches is a 15x7 grid: 105 patches, 0.5 * 105 = 52.5.
  assert masking.num_masked(0.5, 105) == 53 and round(0.5 * 105) == 52  # round() is half-even
  assert masking.num_masked(0.25, 10) == 3 and masking.num_masked(0.5, 104) == 52
  config = _retext_config((240, 112), 0.5)
  pipe = InputConfig(image_size=(240, 112), patch_size=16, patch_stride=16, mask_ratio=0.5)
  method = methods.get("retext").create(config, base.DataInfo(num_classes=3)).method
  assert pipe.num_patches == method.model_config.vit.num_patches == 105
  assert pipe.num_masked == method.model_config.num_masked == 53
  # A mask made by the pipeline's rule goes through the model's reconstruction; the visible
  # tokens are the 52 unmasked patches.
  variables = jax.jit(method.init_variables)(jax.random.key(0))  # compiled: ~10x faster
  rng = np.random.default_rng(0)
  mask = masking.random_patch_mask(rng, 2, 105, pipe.num_masked)
  images = rng.normal(size=(2, 240, 112, 3)).astype(np.float32)
  encode = jax.jit(lambda v, x, m: method.model.apply(
      v, x, patch_mask=m, num_masked=method.model_config.num_masked,
      method=lambda mod, x, **kw: mod.image_encoder(x, **kw)))
  assert encode(variables, images, mask)["patch_tokens"].shape[1] == 52
  # A mask with another count is refused instead of silently gathering the wrong patches.
  with pytest.raises(ValueError, match=r"masks \[52\] patches per row where num_masked=53"):
    method.model.apply(variables, images, patch_mask=masking.random_patch_mask(rng, 2, 105, 52),
                       num_masked=53, method=lambda m, x, **kw: m.image_encoder(x, **kw))


def test_evaluators_check_what_the_method_offers():
  c = ml_collections.ConfigDict(dict(
      method="bot", input=dict(eval_batch=8), eval=dict(max_rank=50),
      evals={"t2i": dict(type="text")}))
  with pytest.raises(errors.ConfigError, match="needs .*text_embed.* bot model does not offer"):
    evaluators.from_config(c, {"captions": object()}, ["reid"])
  c.evals = {"x": dict(type="reid", targets=("nope",))}
  with pytest.raises(errors.UnknownKeyError, match="not in config.data.targets"):
    evaluators.from_config(c, {"target": object()}, ["reid"])
  c.evals = {"x": dict(type="reid", rerankk=True)}
  with pytest.raises(errors.ConfigError, match="config.evals.x"):
    evaluators.from_config(c, {"target": object()}, ["reid"])
  c.evals = {"x": dict(type="reid", features="matching")}
  with pytest.raises(errors.ConfigError, match="image_embed"):
    evaluators.from_config(c, {"target": object()}, ["reid"])
  # A split the evaluator reads is empty: an error at start naming target, dataset and folder.
  c.evals = {"x": dict(type="reid")}
  full = records.ReIDDataset("mine", "/data/mine", query=[records.Record("q.jpg", 1, 0, "query")],
                             gallery=[records.Record("g.jpg", 1, 1, "gallery")])
  assert list(evaluators.from_config(c, {"target": full}, ["reid"])) == ["x"]
  no_query = records.ReIDDataset("mine", "/data/mine", gallery=full.gallery)
  with pytest.raises(errors.DataError, match="target target .mine at /data/mine. has no query "
                                             "images"):
    evaluators.from_config(c, {"target": no_query}, ["reid"])


def test_camera_embedding_models_give_test_features_without_camera_ids():
  """TransReID's side information (`camera=1`): training sees each image's camera, test-time
  feature functions (evaluation, extract, export) have none and use the mean embedding."""
  from configs import bot

  config = bot.get_config("tiny,camera=1")
  method = methods.get("bot").create(config, base.DataInfo(4, num_cameras=3)).method
  variables = method.init_variables(jax.random.key(0))
  assert variables["params"]["image_encoder"]["camera_embed"].shape[0] == 3
  images = np.random.default_rng(0).normal(size=(2, *config.input.image_size, 3))
  feats = np.asarray(method.offered[base.REID](variables, images.astype(np.float32)))
  assert feats.shape[0] == 2 and np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
