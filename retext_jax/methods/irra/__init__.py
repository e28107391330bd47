"""The IRRA-style baseline of text-to-image person retrieval (`configs/irra.py`): image and text
towers trained with similarity-distribution matching and a shared ID loss.
"""

from retext_jax.methods.irra.method import IRRAMethod

METHOD = IRRAMethod
