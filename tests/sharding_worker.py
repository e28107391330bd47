"""Runs a few ReText train steps on N simulated CPU devices and saves loss + params (npz).

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/sharding_worker.py \
  OUT.npz NUM_DEVICES dp|fsdp
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(out: str, num_devices: int, mode: str) -> None:
  import jax
  import numpy as np
  from flax import traverse_util
  from train_utils import TINY_OPTIM, init_variables, tiny_batch, tiny_method

  from retext_jax import optim, sharding
  from retext_jax.train_step import create_state, make_train_step

  mesh = sharding.make_mesh(num_devices)
  method = tiny_method()
  # SGD, not Adam: attention key biases have an exactly-zero true gradient, and Adam would turn
  # their ~1e-9 rounding noise (which differs between shardings) into lr-sized updates.
  tx, scheds = optim.make_optimizer(dict(TINY_OPTIM, name="sgd", lr=0.05), 10,
                                    method.backbone_keys)

  def init():
    return create_state(method, tx, init_variables(method), jax.random.key(1))

  abstract = jax.eval_shape(init)
  shardings = sharding.state_shardings(abstract, mesh, fsdp=mode == "fsdp", min_size=64)
  with jax.set_mesh(mesh):
    state = jax.jit(init, out_shardings=shardings)()
  step = jax.jit(make_train_step(method, tx, scheds),
                 in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
  losses = []
  for i in range(2):
    batch = sharding.global_batch(tiny_batch(seed=i), mesh)
    with jax.set_mesh(mesh):
      state, metrics = step(state, batch)
    losses.append(float(metrics["loss/total"]))
  kernel = state["params"]["image_encoder"]["block_0"]["mlp"]["fc1"]["kernel"]
  shard_shape = kernel.addressable_shards[0].data.shape
  flat = traverse_util.flatten_dict(jax.device_get(state["params"]), sep="/")
  np.savez(out, losses=np.asarray(losses), shard_shape=np.asarray(shard_shape),
           full_shape=np.asarray(kernel.shape), **{f"p/{k}": v for k, v in flat.items()})


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
