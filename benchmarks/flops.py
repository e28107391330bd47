"""Analytic model FLOPs of a train step (matrix multiplications and convolutions only).

MFU = analytic FLOPs per step / step time / the accelerator's peak. Only the dense arithmetic is
counted, as in the usual MFU definition (PaLM, Appendix B): each multiply-add is 2 FLOPs, the
backward pass costs twice the forward, softmax / norms / activations are left out. A forward
pass without gradients (the momentum encoder) counts once.
"""

from __future__ import annotations

import math

from retext_jax.models.bert import BertConfig
from retext_jax.models.vit import ViTConfig


def transformer_layer(tokens: int, width: int, mlp: int, context: int = 0) -> float:
  """One pre-norm block's forward FLOPs: self-attention over `tokens`, a cross-attention to
  `context` tokens of the same width when `context` > 0, and an MLP of hidden size `mlp`."""
  t, w = tokens, width
  flops = 8 * t * w * w + 4 * t * t * w  # q, k, v, out projections; scores and weighted sum
  if context:
    flops += 4 * t * w * w + 4 * context * w * w + 4 * t * context * w
  return flops + 4 * t * w * mlp


def vit_forward(cfg: ViTConfig, kept_patches: int | None = None) -> float:
  """One image through the ViT. `kept_patches`: the encoder sees only these patches (masked
  image modelling); the stem still runs on the whole image."""
  n, d = cfg.num_patches, cfg.hidden_size
  h, w = cfg.image_size
  if cfg.stem == "conv":
    steps = int(math.log2(cfg.patch_size))
    flops, c_in = 0.0, cfg.channels
    for i in range(steps):
      c_out = d >> (steps - 1 - i)
      flops += 2 * (h >> (i + 1)) * (w >> (i + 1)) * 9 * c_in * c_out
      c_in = c_out
    flops += 2 * n * c_in * d
  else:
    flops = 2 * n * cfg.patch_size * cfg.patch_size * cfg.channels * d
  tokens = 1 + (n if kept_patches is None else kept_patches)
  return flops + cfg.num_layers * transformer_layer(tokens, d, cfg.mlp_dim)


def bert_forward(cfg: BertConfig, length: int) -> float:
  """One caption of `length` tokens through BERT (embedding lookups are free) and its pooler."""
  layers = cfg.num_layers * transformer_layer(length, cfg.hidden_size, cfg.intermediate_size)
  return layers + 2 * cfg.hidden_size * cfg.hidden_size


def retext_step(method, config) -> float:
  """FLOPs of one ReText (or BoT: Re-ID only) train step with the config's batch sizes."""
  mc, inp = method.model_config, config.input
  vit = mc.vit
  d = vit.hidden_size
  reid_images = inp.multicam_p * inp.multicam_k
  trained = reid_images * (vit_forward(vit) + 2 * d * mc.num_classes)
  frozen = 0.0
  streams = getattr(method, "streams", ())
  if "singlecam" in streams:
    lc, b, length = config.loss, inp.singlecam_batch_size, inp.max_text_len
    e = mc.embed_dim
    trained += b * (vit_forward(vit) + 2 * d * e)  # view 1, the student's matching embedding
    if lc.lambda_sp > 0 or (lc.lambda_iam > 0 and lc.alpha > 0):
      frozen += b * (vit_forward(vit) + 2 * d * e)  # view 2 through the momentum encoder
    if mc.num_sc_classes:
      trained += b * 2 * d * mc.num_sc_classes
    if mc.text is not None:
      t = mc.text.hidden_size
      trained += b * (bert_forward(mc.text, length) + 2 * t * e) + 2 * 2 * b * b * e
    if mc.use_rec:
      n, wd = vit.num_patches, mc.decoder_width
      kept = n - mc.num_masked
      decoder = (2 * kept * d * wd + 2 * length * mc.text.hidden_size * wd
                 + mc.decoder_depth * transformer_layer(n, wd, 4 * wd, context=length)
                 + 2 * n * wd * vit.patch_size * vit.patch_size * vit.channels)
      trained += b * (vit_forward(vit, kept) + decoder)
  return 3 * trained + frozen
