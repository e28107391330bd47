"""LCR²S: learning comprehensive representations with richer self for text-to-image person
Re-ID (`configs/lcr2s.py`): a support-set teacher distilled into a single-input student.
"""

from retext_jax.methods.lcr2s.method import LCR2SMethod

METHOD = LCR2SMethod
