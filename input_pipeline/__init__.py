"""Host-side data: dataset readers, the synthetic benchmark, TFDS builders and tf.data pipelines.

Nothing here imports JAX models; readers and records import without TensorFlow too.
"""
