"""Shared test setup: quiet TensorFlow, CPU only, and small helpers for writing real image files."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# Enough for the tiny model to retrieve its captioned identities from their descriptions.
TRAINED_STEPS = 200


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
  """A tiny ReText trained for TRAINED_STEPS on the tiny synthetic benchmark (~1 minute), shared
  by every test worker: (workdir, synthetic benchmark folder)."""
  import subprocess
  import sys

  from filelock import FileLock

  shared = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    shared = shared.parent  # this run's folder, the same for all xdist workers
  workdir, cache = shared / "trained_tiny", shared / "trained_tiny_data"
  with FileLock(str(shared / "trained_tiny.lock")):
    if not (workdir / "results.json").exists():
      root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
      config = f"configs/retext.py:tiny,steps={TRAINED_STEPS},singlecam_batch=16"
      cmd = [sys.executable, "-m", "retext_jax.main", f"--config={config}",
             f"--workdir={workdir}", f"--config.data.cache_dir={cache}", "--config.eval_every=0",
             f"--config.checkpoint_every={TRAINED_STEPS}", "--config.log_every=50"]
      proc = subprocess.run(cmd, cwd=root, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                            capture_output=True, text=True, timeout=900)
      if proc.returncode:
        raise RuntimeError(f"training the tools' test model failed:\n{proc.stderr[-3000:]}")
  return str(workdir), str(cache / "tiny_seed0")
