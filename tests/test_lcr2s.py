"""LCR²S and the IRRA-style baseline: support sets from real identity-grouped batches, the
attentional fusion's dependence on the support set, the distillation losses against numpy, a
frozen teacher during stage 2, resume inside stage 2 after SIGKILL, and the `paper` preset on
tiny random Hugging Face towers."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import irra, lcr2s
from retext_jax import checkpointing, losses, methods, optim
from retext_jax.methods import base
from retext_jax.methods.lcr2s.model import AttentionalFusion, support_sets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ------------------------------------------------------------------------------ support sets


def test_support_sets_of_real_batches_hold_only_other_records_of_the_identity(tmp_path):
  """K=4 on the tiny CUHK-PEDES layout, whose identities have 2-3 images: every batch repeats
  images, and no copy of a sample's own image may enter its support set."""
  from input_pipeline import pipeline
  from input_pipeline.synthetic import ensure_benchmark
  from retext_jax import data

  config = lcr2s.get_config("tiny,k=4")
  with config.unlocked():
    config.data.cache_dir = str(tmp_path)
  ensure_benchmark(str(tmp_path / "tiny_seed0"), "tiny", 0)
  sources = data.load_sources(config)
  records = [r for src, _ in sources.multicam for r in src]
  init = methods.get("irra").create(config, sources.info)
  it = pipeline.make_train_iterator(sources.multicam, [], data.input_config(config),
                                    tokenizer=init.tokenizer, multicam_captions=True)
  repeats = 0
  for _ in range(5):
    b = next(it)
    pid, rec = b["multicam/pid"], b["multicam/record"]
    assert all(records[r].pid == p for r, p in zip(rec, pid, strict=True))
    s = np.asarray(support_sets(jnp.asarray(pid), jnp.asarray(rec)))
    for i in range(len(pid)):
      members = np.flatnonzero(s[i])
      assert all(pid[j] == pid[i] and rec[j] != rec[i] for j in members)
      same = np.flatnonzero((pid == pid[i]) & (rec != rec[i]))
      np.testing.assert_array_equal(members, same)  # and every other record of it in the batch
    repeats += len(rec) - len({(p, r) for p, r in zip(pid, rec, strict=True)})
  assert repeats > 0  # the test saw the copies it is about


# ----------------------------------------------------------------------------------- fusion


def test_fusion_depends_on_the_support_set_and_is_the_sample_alone_without_one():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 16)), jnp.float32)
  fusion = AttentionalFusion(num_heads=4, num_layers=2)
  pid = jnp.asarray([0, 0, 0, 1, 1, 2])
  support = support_sets(pid, jnp.arange(6))
  eye = jnp.eye(6, dtype=bool)
  params = fusion.init(jax.random.key(0), x, x, eye)
  fused = fusion.apply(params, x, x, support | eye)
  alone = fusion.apply(params, x, x, eye)
  for i in range(6):  # masked support == the sample run on its own (a batch of one)
    single = fusion.apply(params, x[i:i + 1], x[i:i + 1], jnp.ones((1, 1), bool))
    np.testing.assert_allclose(alone[i], single[0], rtol=1e-5, atol=1e-5)
  changed = np.abs(np.asarray(fused - alone)).max(axis=1)
  assert np.all(changed[:5] > 1e-3)  # identities 0 and 1 have support
  assert changed[5] < 1e-6  # identity 2 has none: its feature is its own
  # Another support member changes the result; a non-member does not. (Not a constant shift:
  # the keys' LayerNorm removes it.)
  x2 = x.at[1].set(-x[1])
  moved = fusion.apply(params, x2, x2, support | eye)
  assert np.abs(np.asarray(moved[0] - fused[0])).max() > 1e-3
  np.testing.assert_allclose(moved[3], fused[3], rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------- losses


def test_relation_distillation_is_the_numpy_frobenius_norm_and_zero_when_they_agree():
  rng = np.random.default_rng(1)
  si, st, ti, tt = (rng.normal(size=(5, 8)).astype(np.float32) for _ in range(4))
  expected = np.linalg.norm(_unit(si) @ _unit(st).T - _unit(ti) @ _unit(tt).T, "fro")
  got = float(losses.relation_distillation(si, st, ti, tt))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Same similarities (scaled features, same directions) -> 0, with a finite gradient (a norm
  # has no gradient at 0; the floor keeps it finite).
  assert float(losses.relation_distillation(si, st, 3 * si, 2 * st)) < 1e-6
  assert np.all(np.isfinite(jax.grad(losses.relation_distillation)(si, st, si, st)))


def test_feature_distillation_is_the_mse_of_normalised_features():
  rng = np.random.default_rng(2)
  s, t = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=(4, 8)).astype(np.float32)
  expected = np.mean(np.sum((_unit(s) - _unit(t)) ** 2, axis=1))
  np.testing.assert_allclose(float(losses.feature_distillation(s, t)), expected, rtol=1e-5)
  assert float(losses.feature_distillation(s, 5 * s)) < 1e-10


def test_irra_loss_is_sdm_plus_the_mean_id_loss_of_both_modalities():
  config = irra.get_config("tiny")
  init = methods.get("irra").create(config, base.DataInfo(num_classes=3))
  method = init.method
  params = method.init_variables(jax.random.key(0))["params"]
  rng = np.random.default_rng(0)
  img, txt = rng.normal(size=(6, 32)).astype(np.float32), rng.normal(size=(6, 32))
  pid = np.asarray([0, 0, 1, 1, 2, 2])
  total, metrics = method.matching_losses(params, jnp.asarray(img), jnp.asarray(txt, jnp.float32),
                                          jnp.asarray(pid))
  w = np.asarray(params["classifier"]["kernel"])

  def ce(e):
    logits = e @ w
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -np.mean(logp[np.arange(6), pid])

  sim = _unit(img) @ _unit(txt).T / config.loss.temperature
  q = (pid[:, None] == pid[None]) / 2.0

  def kl(logits):
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return np.mean(np.sum(np.exp(logp) * (logp - np.log(q + 1e-8)), axis=1))

  np.testing.assert_allclose(float(metrics["loss/sdm"]), kl(sim) + kl(sim.T), rtol=1e-4)
  np.testing.assert_allclose(float(metrics["loss/id"]), 0.5 * (ce(img) + ce(txt)), rtol=1e-4)
  np.testing.assert_allclose(float(total), kl(sim) + kl(sim.T) + 0.5 * (ce(img) + ce(txt)),
                             rtol=1e-4)


# --------------------------------------------------------------- two stages, end to end


def _cmd(config, workdir, cache, *extra):
  return [sys.executable, "-m", "retext_jax.main", f"--config={config}", f"--workdir={workdir}",
          f"--config.data.cache_dir={cache}", *extra]


def _steps(folder):
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) \
      else []


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
  """The tiny two-stage run killed inside stage 2, then run again: (workdir, cache, stderr of
  the second run, the step the kill left)."""
  tmp = tmp_path_factory.mktemp("lcr2s")
  wd, cache = str(tmp / "wd"), str(tmp / "cache")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  args = ["--config.checkpoint_every=2", "--config.eval_every=0", "--config.log_every=1"]
  log = tmp / "first_run.log"  # a file: a pipe nobody reads would fill up and stall the run
  with open(log, "w") as err:
    proc = subprocess.Popen(_cmd("configs/lcr2s.py:tiny,steps=400", wd, cache, *args), cwd=ROOT,
                            env=env, stderr=err, stdout=subprocess.DEVNULL)
  start = time.time()
  while not _steps(f"{wd}/checkpoints"):  # the student's first checkpoint
    if proc.poll() is not None:
      raise AssertionError(log.read_text()[-3000:])
    assert time.time() - start < 600, "no student checkpoint"
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(_steps(f"{wd}/checkpoints"))
  teacher_steps = _steps(f"{wd}/teacher/checkpoints")
  again = subprocess.run(_cmd(f"configs/lcr2s.py:tiny,steps={killed_at + 2}", wd, cache, *args,
                              "--allow_config_change"),
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert _steps(f"{wd}/teacher/checkpoints") == teacher_steps  # stage 1 was not run again
  return wd, cache, again.stderr, killed_at


def test_resume_after_sigkill_in_stage_2_continues_stage_2(killed_and_resumed):
  wd, _, stderr, killed_at = killed_and_resumed
  assert "stage lcr2s_tiny_teacher is finished" in stderr
  assert f"resumed from {wd} at step {killed_at}" in stderr
  assert max(_steps(f"{wd}/checkpoints")) == killed_at + 2
  results = json.load(open(f"{wd}/results.json"))
  assert results["method"] == "lcr2s" and results["step"] == killed_at + 2
  assert set(results["evals"]["t2i"]["synthetic_captions_test"]) >= {"R1", "mAP", "mINP"}
  # Only the student is in the workdir's checkpoints: no teacher, no fusion.
  variables, meta = checkpointing.restore_variables(wd, keys=("params", "teacher"))
  assert meta["model"]["role"] == "student" and not variables["teacher"]
  assert not any("fusion" in k for k in variables["params"])


def test_teacher_stays_frozen_during_stage_2(killed_and_resumed):
  """Student train steps on real batches move the student, not the teacher they read."""
  from input_pipeline import pipeline
  from retext_jax import data
  from retext_jax.train_step import create_state, make_train_step

  wd, cache, _, _ = killed_and_resumed
  config = lcr2s.get_config("tiny,role=student")
  with config.unlocked():
    config.data.cache_dir = cache
    config.init.teacher = f"{wd}/teacher"
  sources = data.load_sources(config)
  init = methods.get("lcr2s").create(config, sources.info)
  method = init.method
  frozen = method.frozen_state()
  saved, _ = checkpointing.restore_variables(f"{wd}/teacher", keys=("params",))
  tx, schedules = optim.make_optimizer(config.optim, 10, method.backbone_keys)
  variables = method.init_variables(jax.random.key(0))
  state = {**create_state(method, tx, variables, jax.random.key(1)), **frozen}
  step = jax.jit(make_train_step(method, tx, schedules))
  it = pipeline.make_train_iterator(sources.multicam, [], data.input_config(config),
                                    tokenizer=init.tokenizer, multicam_captions=True)
  for _ in range(3):
    state, metrics = step(state, next(it))
  assert float(metrics["loss/feat"]) > 0 and float(metrics["loss/rel"]) > 0
  moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), state["params"],
                                 variables["params"])
  assert max(jax.tree_util.tree_leaves(moved)) > 1e-4
  same = jax.tree_util.tree_map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                                state["teacher"], saved["params"])
  assert all(jax.tree_util.tree_leaves(same))


# --------------------------------------------------------------------- the paper preset


def _hf_towers(tmp_path, towers: str) -> list[str]:
  """Random tiny towers written by transformers' save_pretrained; the config flags that use
  them."""
  pytest.importorskip("torch")
  from encoder_utils import save_tiny_bert, save_tiny_clip, save_tiny_vit

  from retext_jax.models import pretrained

  if towers == "clip":
    save_tiny_clip(tmp_path / "hf_clip")
    return [f"--config.init.clip={tmp_path / 'hf_clip'}", "--config.model.fusion_heads=4"]
  save_tiny_vit(tmp_path / "hf_vit")
  save_tiny_bert(tmp_path / "hf_bert", vocab_size=30522)
  shutil.copy(os.path.join(pretrained.minilm_path(), "vocab.txt"), tmp_path / "hf_bert")
  return ["--config.model.towers=vit_bert", f"--config.init.image={tmp_path / 'hf_vit'}",
          f"--config.init.text={tmp_path / 'hf_bert'}", "--config.model.embed_dim=32",
          "--config.model.fusion_heads=4", "--config.input.max_text_len=32"]


@pytest.mark.parametrize("towers", ["clip", "vit_bert"])
def test_paper_preset_runs_both_stages_on_tiny_hf_towers(tmp_path, towers):
  """configs/lcr2s.py (the paper preset: CUHK-PEDES protocol, IRRA's recipe) on the tiny
  synthetic benchmark's CUHK-PEDES layout, one step per stage, nothing downloaded."""
  from input_pipeline.synthetic import ensure_benchmark

  root = ensure_benchmark(str(tmp_path / "data"), "tiny", 0)
  wd = str(tmp_path / "wd")
  cmd = [sys.executable, "-m", "retext_jax.main", "--config=configs/lcr2s.py",
         f"--workdir={wd}", f"--config.data.root={root}", "--config.total_steps=1",
         "--config.teacher_steps=1", "--config.input.image_size=(64,32)",
         "--config.input.multicam_p=4", "--config.input.multicam_k=2",
         "--config.input.eval_batch=16", "--config.optim.warmup_steps=0",
         *_hf_towers(tmp_path, towers)]
  proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for folder, role in ((f"{wd}/teacher", "teacher"), (wd, "student")):
    results = json.load(open(f"{folder}/results.json"))
    assert results["step"] == 1 and np.isfinite(results["evals"]["t2i"]["cuhkpedes"]["mAP"])
    _, meta = checkpointing.restore_variables(folder)
    assert meta["step"] == 1 and meta["model"]["role"] == role
    assert (meta["model"]["clip"] is not None) == (towers == "clip")


def test_tools_work_on_the_student(killed_and_resumed, tmp_path):
  """The workdir of a two-stage run is the student's: protocol evaluation, feature extraction,
  text queries and export read it like any other workdir."""
  from retext_jax.tools import evaluate_protocol, export, extract, query

  wd, cache, _, _ = killed_and_resumed
  root = os.path.join(cache, "tiny_seed0")
  assert evaluate_protocol.main(["--workdir", wd, "--protocol", "synthetic_t2i", "--data_root",
                                 root, "--out", str(tmp_path)]) == 0
  t2i = json.load(open(tmp_path / "synthetic_t2i.json"))
  assert "mAP" in json.dumps(t2i)
  feats = str(tmp_path / "gallery.safetensors")
  assert extract.main(["--workdir", wd, "--kind", "matching", "--dataset",
                       f"cuhkpedes:{root}/CUHK-PEDES:test", "--out", feats]) == 0
  assert query.main(["--workdir", wd, "--gallery", feats, "--text",
                     "a man in a red shirt and black trousers", "--topk", "3"]) == 0
  assert export.main(["--workdir", wd, "--out", str(tmp_path / "exported")]) == 0
  assert os.listdir(tmp_path / "exported")
