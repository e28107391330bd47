"""ReText: text boosts generalisation in image-based person re-identification.

`configs/retext.py` trains it; `method.py` defines the losses.
"""

from retext_jax.methods.retext.method import ReTextMethod

METHOD = ReTextMethod
