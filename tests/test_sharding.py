"""The same global batch on 8 simulated CPU devices (data-parallel and FSDP) gives the same loss
and parameters as on 1 device, and FSDP really shards parameters."""

import os
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "sharding_worker.py")


def _run(tmp_path, devices: int, mode: str) -> dict:
  out = str(tmp_path / f"{mode}_{devices}.npz")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, WORKER, out, str(devices), mode], check=True, env=env,
                 timeout=600)
  return dict(np.load(out))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("sharding")
  return {key: _run(tmp, *key) for key in [(1, "dp"), (8, "dp"), (8, "fsdp")]}


@pytest.mark.parametrize("key", [(8, "dp"), (8, "fsdp")])
def test_matches_single_device(runs, key):
  ref, got = runs[(1, "dp")], runs[key]
  np.testing.assert_allclose(got["losses"], ref["losses"], atol=1e-5, rtol=0)
  assert np.isfinite(ref["losses"]).all() and ref["losses"][0] != ref["losses"][-1]
  params = [k for k in ref if k.startswith("p/")]
  assert len(params) > 20
  for k in params:
    np.testing.assert_allclose(got[k], ref[k], atol=1e-5, rtol=0, err_msg=k)


def test_fsdp_shards_parameters(runs):
  full, shard = runs[(8, "fsdp")]["full_shape"], runs[(8, "fsdp")]["shard_shape"]
  assert np.prod(shard) * 8 == np.prod(full), (full, shard)
  dp = runs[(8, "dp")]
  np.testing.assert_array_equal(dp["shard_shape"], dp["full_shape"])
