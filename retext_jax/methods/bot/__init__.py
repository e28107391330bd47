"""BoT: the strong image Re-ID baseline (ViT + BNNeck, ID + triplet losses; `configs/bot.py`)."""

from retext_jax.methods.bot.method import BoTMethod

METHOD = BoTMethod
