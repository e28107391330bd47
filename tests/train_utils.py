"""A tiny ReText method, optimizer and in-memory batch for train-step tests (no TensorFlow)."""

from __future__ import annotations

import numpy as np

TINY_LOSS = dict(label_smoothing=0.1, triplet_margin=0.3, soft_margin=False, lambda_iam=1.0,
                 matching="iam", temperature=0.07, alpha=0.4, lambda_sp=0.5, sp_temperature=0.1,
                 queue_size=0, lambda_rec=0.5, lambda_sc_id=0.0, momentum=0.99)
TINY_OPTIM = dict(name="adamw", lr=1e-3, head_lr_mult=10.0, weight_decay=0.05, warmup_steps=2,
                  clip_norm=1.0)
IMAGE = (32, 16)
PATCH = 8


def tiny_method(loss=TINY_LOSS, num_classes=4, num_sc_classes=0, dtype="float32"):
  """The ReText method around a 2-block ViT (and BERT when a text loss is on)."""
  import ml_collections

  from retext_jax.methods.retext import ReTextMethod
  from retext_jax.methods.retext.model import ReTextConfig
  from retext_jax.models import bert, vit

  vcfg = vit.ViTConfig(image_size=IMAGE, patch_size=PATCH, hidden_size=32, num_layers=2,
                       num_heads=2, mlp_dim=64, drop_path_rate=0.1)
  use_text = loss["lambda_iam"] > 0 or loss["lambda_rec"] > 0
  tcfg = bert.BertConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=2,
                         intermediate_size=64, max_position_embeddings=16) if use_text else None
  cfg = ReTextConfig(vit=vcfg, text=tcfg, num_classes=num_classes, num_sc_classes=num_sc_classes,
                     embed_dim=16, use_rec=loss["lambda_rec"] > 0, decoder_width=16,
                     decoder_depth=1, decoder_heads=2, num_masked=vcfg.num_patches // 2)
  config = ml_collections.ConfigDict(dict(
      input=dict(image_size=IMAGE, max_text_len=8), model=dict(dtype=dtype), loss=dict(loss),
      eval=dict(neck="after", features="student")))
  return ReTextMethod(config, cfg)


def tiny_batch(seed=0, p=4, k=2, b=8, length=8, num_patches=8):
  rng = np.random.default_rng(seed)
  h, w = IMAGE
  mask = np.zeros((b, num_patches), bool)
  for i in range(b):
    mask[i, rng.permutation(num_patches)[: num_patches // 2]] = True
  tokens = rng.integers(1, 50, (b, length)).astype(np.int32)
  token_mask = np.ones((b, length), np.int32)
  token_mask[:, length - 2:] = 0
  return {
      "multicam/image": rng.normal(size=(p * k, h, w, 3)).astype(np.float32),
      "multicam/pid": np.repeat(np.arange(p), k).astype(np.int32),
      "multicam/camid": np.tile(np.arange(k), p).astype(np.int32),
      "singlecam/view1": rng.normal(size=(b, h, w, 3)).astype(np.float32),
      "singlecam/view2": rng.normal(size=(b, h, w, 3)).astype(np.float32),
      "singlecam/pid": (np.arange(b) // 2).astype(np.int32),
      "singlecam/tokens": tokens,
      "singlecam/token_mask": token_mask,
      "singlecam/patch_mask": mask,
  }


def init_variables(method, seed=0):
  import jax
  import jax.numpy as jnp

  h, w = IMAGE
  n = method.model_config.vit.num_patches
  pm = jnp.zeros((2, n), bool).at[:, : method.model_config.num_masked].set(True)
  tokens = jnp.ones((2, 8), jnp.int32)
  return method.model.init({"params": jax.random.key(seed), "dropout": jax.random.key(seed)},
                    jnp.zeros((2, h, w, 3)), tokens, jnp.ones_like(tokens), pm)
