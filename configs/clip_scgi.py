r"""CLIP-SCGI: synthesized caption-guided inversion for supervised person Re-ID.

CLIP image and text towers; captions (made offline by `python -m retext_jax.tools.caption`)
guide a pseudo-word token S* into the prompt "a photo of a S* person" (CGI) and a fusion of the
prompt with the image tokens (CFF) during training only; at test time the image tower alone gives
the feature. `model.cgi=0` and `model.cff=0` (`baseline` preset) give the CLIP-ReID-style
baseline. The losses and every choice the paper leaves open: retext_jax/methods/clip_scgi/.

Presets (`--config=configs/clip_scgi.py:PRESET[,key=value,...]`):

* `demo` - supervised on the synthetic benchmark (train on source_market, test on its query /
  gallery and on the unseen target_market), with the template captions the benchmark ships in
  `source_market/captions.json`. No pretrained CLIP can be downloaded here, so the towers start
  from scratch (ViT-Ti/6 at 128x64, a 2-block text tower on the MiniLM WordPiece vocabulary):

    python -m retext_jax.main --config=configs/clip_scgi.py:demo --workdir=workdirs/clip_scgi

  Measured on 2 CPU cores: 2 min 55 s; source-domain test mAP 4.9 % untrained -> 20.1 % (R1
  6.7 -> 20.8 %), unseen target mAP 3.4 -> 8.0 %. From scratch on this benchmark the
  `baseline` preset scores higher (28.7 +- 0.6 source mAP over 3 seeds; README ablation).

* `baseline` - the demo without CGI and CFF (the CLIP-ReID-style baseline).
* `tiny` - a few steps on the tiny synthetic benchmark, for tests.
* default (no preset) - the paper recipe as far as it is known: CLIP ViT-B/16 converted from a
  local openai/clip-vit-base-patch16 folder (`python -m retext_jax.tools.convert --kind clip`),
  256x128, Market-1501 supervised (`protocol=sup_msmt17`, `sup_dukemtmcreid`,
  `sup_occluded_duke`); caption the training set first and keep the sidecar as captions.json in
  the dataset folder:

    python -m retext_jax.tools.caption --dataset market1501:/data/reid/market1501:train \
      --model ~/models/ReText-LLaVA --out market_captions.jsonl
    python -m retext_jax.main --config=configs/clip_scgi.py --workdir=workdirs/clip_scgi_m \
      --config.data.root=/data/reid --config.init.clip=~/ckpt/clip_b16

Overrides: steps, batch (P), k, lr, seed, protocol, cgi (0/1), cff (0/1), stride, camera.
"""

from __future__ import annotations

import ml_collections

from configs import common

SHORT = {**common.SHORT, "cgi": "model.cgi", "cff": "model.cff", "stride": "model.stride",
         "camera": "model.camera_embedding"}
CAPTIONS = "captions.json"  # the sidecar each training source reads (in its dataset folder)


def base_config() -> ml_collections.ConfigDict:
  c = common.base_config("clip_scgi", "clip_scgi")
  c.protocol = "sup_market1501"
  c.total_steps = 12_000  # about 60 epochs of Market-1501 at 64 images per step (CLIP-ReID)
  c.input.update(max_text_len=77, mean=(0.48145466, 0.4578275, 0.40821073),
                 std=(0.26862954, 0.26130258, 0.27577711))  # CLIP's normalisation
  for key in ("vit", "depth"):  # the ViT size comes from the CLIP checkpoint (or the keys below)
    del c.model[key]
  c.model.update(
      # From-scratch tower sizes, used only without init.clip.
      width=768, depth=12, heads=12, projection_dim=512, text_width=512, text_depth=12,
      text_heads=8,
      prompt="a photo of a X person",  # X: where CGI's pseudo-token S* goes
      cgi=True, cff=True,
      num_queries=2, cgi_heads=8,  # CGI's local branch (unknown in the paper: reimplementation's)
      cff_blocks=2, cff_heads=8,
  )
  c.init.update(clip="", tokenizer="minilm")  # converted CLIP folder; tokenizer without it
  c.loss.update(lambda_id=1.0, lambda_triplet=1.0, lambda_itc=1.0, lambda_cff=1.0)
  # CLIP-ReID's stage-2 rate for the pretrained towers; CGI, CFF and the heads are new (x10).
  c.optim.update(lr=5e-6, head_lr_mult=10.0, warmup_steps=500)
  return c


def demo_config() -> ml_collections.ConfigDict:
  c = base_config()
  c.name = "clip_scgi_demo"
  common.synthetic_demo(c, captions=False)
  c.data.sources["synthetic_source"]["options"]["captions"] = CAPTIONS
  c.data.targets = {"synthetic_source_test": common.target("market1501", "source_market"),
                    "synthetic_target": common.target("market1501", "target_market")}
  c.input.update(max_text_len=32)
  c.model.update(width=192, depth=6, heads=3, projection_dim=128, text_width=128, text_depth=2,
                 text_heads=2, cgi_heads=4, cff_heads=4)
  return c


def baseline_config() -> ml_collections.ConfigDict:
  c = demo_config()
  c.name = "clip_reid_baseline_demo"
  c.model.update(cgi=False, cff=False)
  return c


def tiny_config() -> ml_collections.ConfigDict:
  c = demo_config()
  c.name = "clip_scgi_tiny"
  common.synthetic_tiny(c)
  c.input.update(max_text_len=24)
  c.model.update(width=64, depth=2, heads=2, projection_dim=32, text_width=32, text_depth=1,
                 cgi_heads=2, cff_heads=2, cff_blocks=1)
  return c


PRESETS = {"paper": base_config, "demo": demo_config, "baseline": baseline_config,
           "tiny": tiny_config}


def _protocol_data(c: ml_collections.ConfigDict) -> None:
  common.protocol_data(c)
  if c.model.cgi and not c.data.synthetic_preset and not c.data.custom:  # (custom: in the list)
    for spec in c.data.sources.values():
      spec["options"]["captions"] = CAPTIONS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg` = "[preset][,key=value...]" with preset in {paper (default), demo, baseline, tiny}."""
  return common.parse(arg, "configs/clip_scgi.py", PRESETS, SHORT, _protocol_data)
