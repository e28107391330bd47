"""CLIP-SCGI: synthesized caption-guided inversion for person Re-ID (`configs/clip_scgi.py`).

With `model.cgi=False, model.cff=False` it is the CLIP-ReID-style baseline: the CLIP image tower
fine-tuned with ID + triplet losses.
"""

from retext_jax.methods.clip_scgi.method import CLIPSCGIMethod

METHOD = CLIPSCGIMethod
