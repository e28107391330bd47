"""End-to-end runs of `python -m retext_jax.main` on the tiny synthetic benchmark.

Covers what users count on: results, TensorBoard events and checkpoints
in the workdir; resume after SIGKILL; a checkpoint on SIGTERM; a checkpoint written on 8
devices restored on 1; one-line errors for bad config keys, data folders and weights; a NaN loss
stopping the run with the last good checkpoint intact.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# No text encoder: these tests are about the trainer, and small checkpoints keep them fast.
NO_TEXT = "configs/retext.py:tiny,lambda_iam=0,lambda_rec=0"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("synthetic_cache"))


def _cmd(config, workdir, cache, *extra):
  return [sys.executable, "-m", "retext_jax.main", f"--config={config}", f"--workdir={workdir}",
          f"--config.data.cache_dir={cache}", *extra]


def _env(devices=1):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  if devices > 1:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _run(config, workdir, cache, *extra, devices=1, check=True):
  proc = subprocess.run(_cmd(config, workdir, cache, *extra), cwd=ROOT, env=_env(devices),
                        capture_output=True, text=True, timeout=900)
  if check and proc.returncode:
    raise AssertionError(f"rc={proc.returncode}\n{proc.stderr[-3000:]}")
  return proc


def _steps(workdir):
  names = (os.path.basename(p) for p in glob.glob(f"{workdir}/checkpoints/*"))
  return sorted(int(n) for n in names if n.isdigit())  # skips orbax's in-progress *-tmp folders


FSDP_TINY = ("configs/retext.py:tiny,singlecam_batch=8", "--config.mesh.fsdp=True")


def test_full_run_on_8_devices_two_processes_then_eval_on_1(tmp_path, cache):
  wd = str(tmp_path / "wd")
  train = _run(FSDP_TINY[0], wd, cache, *FSDP_TINY[1:], devices=8)
  assert "/orbax/" not in train.stderr and "checkpoint_manager.py" not in train.stderr  # quiet
  assert "logging_writer.py" in train.stderr  # while our own INFO lines still show
  res = json.load(open(f"{wd}/results.json"))
  assert res["step"] == 6 and res["config_name"] == "retext_tiny"
  target = res["evals"]["reid"]["synthetic_target"]
  assert set(target) == {"R1", "R5", "R10", "mAP", "mINP"}
  assert 0 < target["mAP"] <= 1 and target["R1"] <= target["R5"] <= target["R10"]
  assert glob.glob(f"{wd}/events.out.tfevents.*")
  _check_pictures(wd, steps=(0, 6))  # the reconstruction batch padded to the 8 devices
  assert _steps(wd) == [3, 6]
  assert glob.glob(f"{wd}/best/[0-9]*")
  assert [h["step"] for h in res["history"]] == [0, 6]  # the learning curve
  assert res["history"][-1]["evals"] == res["evals"]
  assert res["history"][0]["evals"] == res["initial"]
  pixels = res["baselines"]["raw_pixels"]["reid"]["synthetic_target"]
  want = _raw_pixel_map(f"{cache}/tiny_seed0/target_market")
  assert pixels["mAP"] == pytest.approx(want, abs=1e-6)
  assert f"raw pixels {pixels['mAP']:.1%} | trained {target['mAP']:.1%}" in train.stdout
  # The FSDP checkpoint of 8 devices restores on one device and reproduces the final metrics.
  proc = _run("configs/retext.py:tiny,singlecam_batch=8", wd, cache, "--mode=eval", devices=1)
  again = json.load(open(f"{wd}/results_eval_latest.json"))
  assert again["step"] == 6
  for k, v in target.items():
    assert abs(again["evals"]["reid"]["synthetic_target"][k] - v) < 1e-4, k
  assert "reid/synthetic_target: R1" in proc.stdout
  # Evaluation options given on the command line apply to the restored checkpoint.
  _run("configs/retext.py:tiny,singlecam_batch=8", wd, cache, "--mode=eval",
       "--config.eval.neck=before")
  before = json.load(open(f"{wd}/results_eval_latest.json"))["evals"]["reid"]["synthetic_target"]
  assert before != again["evals"]["reid"]["synthetic_target"]
  # One test, not two: the 8-device run is the two-process run's reference (xdist would run a
  # shared fixture once per worker).
  _two_processes_match(train, res, str(tmp_path / "two"), cache)


def _free_port() -> int:
  import socket

  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _step_metrics(stderr: str, step: int) -> dict[str, float]:
  """The training scalars the metric writer logged at `step` (loss/total, grad_norm, ...)."""
  line = [ln for ln in stderr.splitlines() if f"] [{step}] grad_norm=" in ln][-1]
  pairs = line.split(f"[{step}] ", 1)[1].split(", ")
  return {k: float(v) for k, v in (p.split("=") for p in pairs)}


def _two_processes_match(one, one_results, wd, cache):
  """Two processes x 4 CPU devices (jax.distributed on localhost, gloo collectives, FSDP across
  the processes, each host loading its rows of every batch) against one process x 8 devices."""
  worker = os.path.join(ROOT, "tests", "multiprocess_worker.py")
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, worker, f"{wd}_written{i}.json", *_cmd(FSDP_TINY[0], wd, cache)[3:],
       *FSDP_TINY[1:], "--distributed", f"--coordinator_address=localhost:{port}",
       "--num_processes=2", f"--process_id={i}"],
      cwd=ROOT, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (_, err) in zip(procs, outs, strict=True):
    assert p.returncode == 0, err[-3000:]
  assert "process 1 of 2" in outs[1][1]
  # Both processes hold the same replicated step metrics, equal to the one-process run's.
  want = _step_metrics(one.stderr, 6)
  got = [_step_metrics(err, 6) for _, err in outs]
  assert got[0] == got[1]
  assert got[0] == pytest.approx(want, rel=1e-5)
  res = json.load(open(f"{wd}/results.json"))
  for key in ("evals", "initial"):
    for name, targets in one_results[key].items():
      for target, metrics in targets.items():
        assert res[key][name][target] == pytest.approx(metrics, abs=1e-6), (key, name, target)
  # Only process 0 writes results, config, tokenizer and TensorBoard events (the checkpoints
  # are orbax's: every process writes its own shards).
  written = [json.load(open(f"{wd}_written{i}.json")) for i in range(2)]
  mine = [[p for p in w if p.startswith(wd + os.sep) and
           not p.startswith((f"{wd}/checkpoints/", f"{wd}/best/"))] for w in written]
  assert {f"{wd}/results.json", f"{wd}/config.json"} <= set(mine[0])
  assert mine[1] == []
  events = glob.glob(f"{wd}/events.out.tfevents.*")
  assert len(events) == 1 and f".{procs[0].pid}." in events[0]
  _check_pictures(wd, steps=(0, 6))  # process 0 draws; both reconstruct (sharded model)
  assert "raw pixels" in outs[0][0] and "[retext_tiny]" not in outs[1][0]  # printed once
  # The checkpoint the two processes wrote restores on one process of one device.
  _run(FSDP_TINY[0], wd, cache, "--mode=eval", devices=1)
  again = json.load(open(f"{wd}/results_eval_latest.json"))["evals"]
  assert again["reid"]["synthetic_target"] == pytest.approx(
      res["evals"]["reid"]["synthetic_target"], abs=1e-4)


def _raw_pixel_map(root):
  """Independent numpy re-derivation of the raw-pixel baseline's mAP on a Market-layout folder:
  16x32 box-downsampled pixels minus their mean, cosine similarity, same-id same-camera gallery
  images and junk (-1) removed per query."""
  from PIL import Image

  def read(split):
    rows = []
    for path in sorted(glob.glob(f"{root}/{split}/*.jpg")):
      name = os.path.basename(path)
      pid, cam = int(name.split("_")[0]), int(name.split("_")[1][1])
      if pid == -1:
        continue
      x = np.asarray(Image.open(path).convert("RGB").resize((16, 32), Image.BOX), np.float64)
      x = (x - x.mean()).ravel()
      rows.append((x / np.linalg.norm(x), pid, cam))
    return rows

  gallery = read("bounding_box_test")
  aps = []
  for qf, qp, qc in read("query"):
    kept = [(float(qf @ gf), gp) for gf, gp, gc in gallery if not (gp == qp and gc == qc)]
    match = np.array([gp == qp for _, gp in sorted(kept, key=lambda t: -t[0])])
    if match.any():
      hits = np.flatnonzero(match)
      aps.append(np.mean(np.arange(1, len(hits) + 1) / (hits + 1)))
  return float(np.mean(aps))


def _wait_for(pred, proc, timeout=600):
  start = time.time()
  while not pred():
    if proc.poll() is not None:
      raise AssertionError(f"run ended early, rc={proc.returncode}: {proc.stderr.read()[-3000:]}")
    if time.time() - start > timeout:
      proc.kill()
      raise AssertionError("timed out waiting for a checkpoint")
    time.sleep(0.2)


def test_sigkill_then_resume_reaches_final_step(tmp_path, cache):
  wd = str(tmp_path / "wd")
  args = ["--config.total_steps=400", "--config.checkpoint_every=2", "--config.eval_every=0"]
  proc = subprocess.Popen(_cmd(NO_TEXT, wd, cache, *args), cwd=ROOT, env=_env(),
                          stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  _wait_for(lambda: len(_steps(wd)) >= 1, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(_steps(wd))
  assert killed_at < 400
  out = _run(NO_TEXT, wd, cache, "--config.total_steps=" + str(killed_at + 4),
             "--config.checkpoint_every=2", "--config.eval_every=0", "--allow_config_change")
  assert f"resumed from {wd} at step {killed_at}" in out.stderr
  assert max(_steps(wd)) == killed_at + 4


def test_a_resumed_run_ends_exactly_as_the_uninterrupted_one(tmp_path, cache):
  # The full tiny ReText (every stream and random draw: sampling, augmentation, captions, patch
  # masks, dropout). "cut" is the uninterrupted run's workdir as a kill after the step-3
  # checkpoint leaves it (with a best/ of step 6 that a kill between the best and the regular
  # save leaves); resumed, it must reach the same step-6 model and metrics.
  import orbax.checkpoint as ocp

  whole, cut = tmp_path / "whole", tmp_path / "cut"
  args = ["--config.total_steps=6", "--config.checkpoint_every=3", "--config.eval_every=6"]
  _run("configs/retext.py:tiny", str(whole), cache, *args)
  _check_pictures(str(whole), steps=(0, 6))
  shutil.copytree(whole, cut)
  shutil.rmtree(cut / "checkpoints" / "6")
  os.remove(cut / "results.json")
  out = _run("configs/retext.py:tiny", str(cut), cache, *args)
  assert f"resumed from {cut} at step 3" in out.stderr
  assert "best checkpoint of step 6 is newer than the resumed step 3: removed" in out.stderr
  assert os.listdir(cut / "best") == ["6"]  # saved again by the resumed run
  a, b = (json.load(open(w / "results.json"))["evals"] for w in (whole, cut))
  assert a == b
  restore = lambda w: ocp.StandardCheckpointer().restore(  # noqa: E731
      os.path.abspath(w / "checkpoints" / "6" / "state"))
  leaves_a, leaves_b = (jax.tree_util.tree_leaves_with_path(restore(w)) for w in (whole, cut))
  assert len(leaves_a) == len(leaves_b) > 50
  raw = lambda x: np.asarray(  # noqa: E731
      jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
  for (path, x), (_, y) in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_array_equal(raw(x), raw(y), err_msg=jax.tree_util.keystr(path))


def _check_pictures(workdir, steps):
  """The TensorBoard pictures of every evaluation (retext_jax/eval_images.py): ranked lists per
  Re-ID evaluator and the reconstruction sheet, showing the same queries each time."""
  from event_utils import image_summaries

  from retext_jax.tools.visualize_ranks import LAYOUT

  pics = image_summaries(workdir)
  tags = ("ranks/reid/synthetic_target", "ranks/in_domain/synthetic_source",
          "reconstruction/synthetic_captions_test")
  assert set(pics) == {(t, s) for t in tags for s in steps}
  query_column = LAYOUT.origin(0, 1)[0]
  for tag in tags[:2]:
    first, last = pics[(tag, steps[0])], pics[(tag, steps[-1])]
    assert np.array_equal(first[:, :query_column], last[:, :query_column]), tag


def _damage(step_dir):
  """Truncates every array file of a checkpoint to half its size."""
  for path in glob.glob(f"{step_dir}/state/ocdbt.process_0/d/*"):
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)


def test_damaged_checkpoints_fall_back_or_fail_in_one_line(tmp_path, cache):
  wd = str(tmp_path / "wd")
  args = ["--config.checkpoint_every=2", "--config.eval_every=0"]
  _run(NO_TEXT, wd, cache, "--config.total_steps=4", *args)
  _damage(f"{wd}/checkpoints/4")
  ev = _run(NO_TEXT, wd, cache, "--mode=eval")  # evaluation falls back to step 2 as well
  assert "checkpoints/4: " in ev.stderr and "falling back to step 2" in ev.stderr
  assert json.load(open(f"{wd}/results_eval_latest.json"))["step"] == 2
  out = _run(NO_TEXT, wd, cache, "--config.total_steps=6", "--allow_config_change", *args)
  warned = [x for x in out.stderr.splitlines() if "checkpoint unreadable" in x]
  assert len(warned) == 1 and "checkpoints/4: " in warned[0], out.stderr[-3000:]
  assert "falling back to step 2" in warned[0] and f"resumed from {wd} at step 2" in out.stderr
  assert "Traceback" not in ev.stderr + out.stderr, (ev.stderr + out.stderr)[-3000:]
  assert _steps(wd) == [4, 6] and os.path.isdir(f"{wd}/checkpoints/4.unreadable")
  for step in _steps(wd):
    _damage(f"{wd}/checkpoints/{step}")
  for extra, expected in ((["--mode=eval"], "none of steps [6, 4] reads"),
                          (["--config.total_steps=8", "--allow_config_change", *args],
                           "can be read (tried steps 6, 4"),
                          (["--mode=eval"], "set aside as unreadable by an earlier run")):
    bad = _run(NO_TEXT, wd, cache, *extra, check=False)
    errors = [x for x in bad.stderr.splitlines() if x.startswith("error:")]
    assert bad.returncode == 2 and len(errors) == 1, bad.stderr[-3000:]
    # One line: no traceback, ours or of the reads orbax abandons after the first failure.
    assert expected in errors[0] and "Traceback" not in bad.stderr, bad.stderr[-3000:]


def test_sigterm_saves_current_step(tmp_path, cache):
  wd = str(tmp_path / "wd")
  args = ["--config.total_steps=100000", "--config.checkpoint_every=3",
          "--config.keep_checkpoints=100", "--config.eval_every=0"]
  proc = subprocess.Popen(_cmd(NO_TEXT, wd, cache, *args), cwd=ROOT, env=_env(),
                          stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  _wait_for(lambda: len(_steps(wd)) >= 1, proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  stopped = [line for line in err.splitlines() if "signal 15 received" in line]
  assert len(stopped) == 1, err[-3000:]
  step = int(stopped[0].split("saved step ")[1].split()[0])
  assert step >= 3 and max(_steps(wd)) == step < 100000


@pytest.mark.parametrize("config, extra, expected", [
    ("configs/retext.py:demoo", [], "unknown preset 'demoo' in configs/retext.py"),
    ("configs/retxt.py:tiny", [], "--config: cannot load the config file ([Errno 2] No such file "
                                  "or directory: 'configs/retxt.py')"),
    ("configs/bot.py:tiny,steps=abc", [], "config override steps='abc': expected an integer"),
    ("configs/bot.py:tiny,steps=2.7", [], "config override steps='2.7': expected an integer"),
    (NO_TEXT, ["--mode=eval", "--checkpoint=last"], "--checkpoint='last': expected latest, best"),
    (NO_TEXT, ["--mode=eval"], "does not exist (--mode=eval reads the checkpoints"),
    (NO_TEXT, ["--config.no_such_key=1"], "unknown config key 'no_such_key'"),
    (NO_TEXT, ["--config.total_step=10"], "unknown config key 'total_step' in a --config "
                                          "override (Did you mean \"total_steps\""),
    (NO_TEXT, ["--config.total_steps=abc"], "--config.total_steps=abc: invalid literal"),
    (NO_TEXT, ["--config.data.synthetic_preset=", "--config.data.root=/nonexistent/reid"],
     "/nonexistent/reid/SYNTH-PEDES does not exist"),
    (NO_TEXT, ["--config.init.image=/nonexistent/vit_b16"], "/nonexistent/vit_b16 does not exist"),
])
def test_user_errors_are_one_line(tmp_path, cache, config, extra, expected):
  proc = _run(config, str(tmp_path / "wd"), cache, *extra, check=False)
  assert proc.returncode == 2
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and expected in errors[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr


def test_training_images_that_do_not_decode_are_skipped_by_name(tmp_path, cache):
  # JPEGs corrupt inside (valid header and end marker) pass the up-front check; the pipeline
  # fails on them mid-training, and the run must name, count and skip them (or stop under
  # on_bad_image=error), never die with TensorFlow's decode error.
  from pipeline_utils import corrupt_jpeg_middle

  _run(NO_TEXT, str(tmp_path / "render"), cache, "--config.total_steps=1",
       "--config.eval_every=0")  # the tiny benchmark exists in `cache` from here on
  mine = tmp_path / "cache"
  shutil.copytree(cache, mine)
  train = sorted(glob.glob(f"{mine}/tiny_seed0/source_market/bounding_box_train/*.jpg"))
  bad = sorted(corrupt_jpeg_middle(p, p) for p in train[::4])
  wd = tmp_path / "wd"
  out = _run(NO_TEXT, str(wd), str(mine), "--config.total_steps=4", "--config.eval_every=0")
  assert f"skipped {len(bad)} bad image(s) of" in out.stderr and os.path.basename(bad[0]) in \
      out.stderr and "Traceback" not in out.stderr
  assert json.load(open(wd / "undecodable_images.json")) == bad
  strict = _run(NO_TEXT, str(tmp_path / "strict"), str(mine), "--config.total_steps=4",
                "--config.eval_every=0", "--config.input.on_bad_image=error", check=False)
  errors = [x for x in strict.stderr.splitlines() if x.startswith("error:")]
  assert strict.returncode == 2 and len(errors) == 1 and "does not decode" in errors[0]


def test_a_workdir_that_is_a_file_is_one_line(tmp_path, cache):
  (tmp_path / "file").write_text("")
  proc = _run(NO_TEXT, str(tmp_path / "file"), cache, check=False)
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert proc.returncode == 2 and len(errors) == 1 and "is a file; give a folder" in errors[0]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, cache):
  wd = str(tmp_path / "wd")
  _run(NO_TEXT, wd, cache, "--config.total_steps=2", "--config.checkpoint_every=2",
       "--config.eval_every=0")
  original = open(f"{wd}/config.json").read()
  # Another batch size and dtype in the same workdir: an error naming both, config.json kept.
  other = _run(NO_TEXT, wd, cache, "--config.total_steps=2", "--config.eval_every=0",
               "--config.input.multicam_p=2", "--config.model.dtype=bfloat16", check=False)
  line = [x for x in other.stderr.splitlines() if x.startswith("error:")]
  assert other.returncode == 2 and len(line) == 1, other.stderr[-2000:]
  assert "input.multicam_p: 4 -> 2" in line[0] and "model.dtype: 'float32' -> 'bfloat16'" in \
      line[0] and "--allow_config_change" in line[0]
  assert open(f"{wd}/config.json").read() == original
  # Resume with an absurd learning rate (allowed): the weights blow up, the loss is non-finite.
  proc = _run(NO_TEXT, wd, cache, "--config.total_steps=50", "--config.eval_every=0",
              "--config.checkpoint_every=1000", "--config.optim.lr=1e8",
              "--config.optim.warmup_steps=0", "--allow_config_change", check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  line = [x for x in proc.stderr.splitlines() if x.startswith("error:")][0]
  assert "non-finite loss at step" in line and "loss/" in line
  assert _steps(wd) == [2]
  assert open(f"{wd}/config_until_step2.json").read() == original  # the original run's config
  assert json.load(open(f"{wd}/config.json"))["optim"]["lr"] == 1e8
