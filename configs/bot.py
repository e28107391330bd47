r"""BoT: the strong image Re-ID baseline (ViT + BNNeck, ID loss with label smoothing + batch-hard
triplet), with TransReID's overlapping patches and camera embedding as options. Multi-camera
data only: it is the "Re-ID only" row of the ablations and the baseline of CLIP-SCGI's tables.

Presets (`--config=configs/bot.py:PRESET[,key=value,...]`):

* `demo` - the synthetic benchmark at the ReText demo's scale (same data, ViT-Ti/6 at 128x64,
  400 steps), without the captioned set:

    python -m retext_jax.main --config=configs/bot.py:demo --workdir=workdirs/bot_demo

  Measured on 2 CPU cores: see the README's "Adding a method" section.

* `tiny` - a few steps on the tiny synthetic benchmark, for tests.

* default (no preset) - ViT-B/16 at 256x128 from converted ImageNet weights on a protocol's
  sources (`protocol=m_to_ms`, ...; default p2_c3):

    python -m retext_jax.main --config=configs/bot.py --workdir=workdirs/bot \
      --config.data.root=/data/reid --config.init.image=/ckpt/vit_b16

Overrides: steps, batch (P), k, lr, seed, protocol, stride (16 = no overlap; 12 = TransReID's
overlapping patches, with the patch embedding), camera (1 = camera embedding), e.g.
`configs/bot.py,stride=12`.
"""

from __future__ import annotations

import ml_collections

from configs import common

SHORT = {**common.SHORT, "stride": "model.stride", "camera": "model.camera_embedding"}


def base_config() -> ml_collections.ConfigDict:
  return common.base_config("bot", "bot")


def demo_config() -> ml_collections.ConfigDict:
  c = base_config()
  c.name = "bot_demo"
  common.synthetic_demo(c, captions=False)
  common.from_scratch_vit_recipe(c)  # the ReText demo's recipe, so the two compare
  return c


def tiny_config() -> ml_collections.ConfigDict:
  c = demo_config()
  c.name = "bot_tiny"
  common.synthetic_tiny(c)
  return c


PRESETS = {"paper": base_config, "demo": demo_config, "tiny": tiny_config}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg` = "[preset][,key=value...]" with preset in {paper (default), demo, tiny}."""
  return common.parse(arg, "configs/bot.py", PRESETS, SHORT, common.protocol_data)
