"""L2 normalisation, written once for numpy (evaluation on the host) and JAX (models, losses)."""

from __future__ import annotations

import numpy as np

EPS = 1e-12


def l2_normalize(x, axis: int = -1):
  """x / max(||x||, 1e-12) along `axis` (torch's `F.normalize`; safe for all-zero rows).
  numpy in, numpy out; a JAX array (or tracer) in, a JAX array out."""
  if isinstance(x, np.ndarray):
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), EPS)
  import jax.numpy as jnp

  return x / jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True)), EPS)
