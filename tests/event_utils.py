"""Reads the image summaries of a workdir's TensorBoard event files (TensorFlow's own reader)."""

from __future__ import annotations

import glob
import os

import numpy as np


def image_summaries(workdir: str) -> dict[tuple[str, int], np.ndarray]:
  """{(tag, step): uint8 [H, W, 3]} of every image summary under `workdir` (the first image of
  each; the trainer writes one per tag and step)."""
  import tensorflow as tf

  out = {}
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name != "images":
          continue
        # tf.summary.image: a string tensor [width, height, encoded image, ...].
        png = value.tensor.string_val[2]
        out[(value.tag, int(event.step))] = tf.io.decode_png(png, channels=3).numpy()
  return out
