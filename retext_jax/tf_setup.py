"""TensorFlow start-up settings shared by the entry points (TensorFlow only feeds data here).

`quiet()` must run before TensorFlow is first imported; `data_only()` imports it and hides the
accelerators from it, so that JAX owns every GPU.
"""

from __future__ import annotations

import os


def quiet() -> None:
  """No C++ INFO/WARNING chatter and no oneDNN notice (a user's own settings win)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def data_only() -> None:
  quiet()
  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")
