"""Device mesh, parameter shardings (data-parallel or FSDP) and host batches as global arrays.

One `jax.jit` over a `jax.make_mesh` mesh replaces pmap: the batch is sharded along `data`;
parameters are replicated (data-parallel) or sharded along `data` too (FSDP), in which case XLA
inserts the all-gathers and reduce-scatters. Multi-host runs call `jax.distributed.initialize()`
first; each host then passes its own slice of the global batch.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from retext_jax import errors

DATA = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh over all (or the first `num_devices`) devices, axis name `data`."""
  devices = jax.devices()
  n = len(devices) if num_devices is None else num_devices
  if n > len(devices):
    raise errors.ConfigError(f"mesh asks for {n} devices but only {len(devices)} are visible")
  return Mesh(np.asarray(devices[:n]), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def fsdp_spec(shape: tuple[int, ...], axis_size: int, min_size: int = 2**12) -> P:
  """Shards the largest dimension divisible by the axis size; small arrays stay replicated."""
  if axis_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % axis_size == 0:
      spec = [None] * len(shape)
      spec[dim] = DATA
      return P(*spec)
  return P()


def state_shardings(abstract_state, mesh: Mesh, fsdp: bool = False, min_size: int = 2**12):
  """Shardings for a pytree of ShapeDtypeStructs (params, optimizer state, EMA copies alike)."""
  size = mesh.shape[DATA]

  def one(x):
    if not fsdp or not hasattr(x, "shape"):
      return replicated(mesh)
    return NamedSharding(mesh, fsdp_spec(tuple(x.shape), size, min_size))

  return jax.tree_util.tree_map(one, abstract_state)


def global_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local numpy batch → global arrays sharded along `data` (one host or many)."""
  sharding = batch_sharding(mesh)
  return {
      k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
  }


def host_rows(x: jax.Array, batch: jax.sharding.Sharding) -> np.ndarray:
  """This process's rows of an output computed from a batch placed with sharding `batch` (by
  `global_batch`): the rows of its own inputs, in order. On one process, all of `x`."""
  if x.is_fully_addressable:
    return np.asarray(x)
  if x.sharding != batch:  # e.g. replicated, or split along features under FSDP
    x = _resharder(batch)(x)
  rows = {s.index[0].indices(x.shape[0])[:2]: s.data for s in x.addressable_shards}
  return np.concatenate([np.asarray(rows[k]) for k in sorted(rows)])


@functools.lru_cache(maxsize=8)
def _resharder(target: jax.sharding.Sharding):
  return jax.jit(lambda y: y, out_shardings=target)
