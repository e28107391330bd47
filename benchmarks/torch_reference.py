r"""ReText's train step in PyTorch, built from our JAX train state: a parity and speed reference.

It computes what `retext_jax.train_step.make_train_step(ReTextMethod, ...)` computes, in torch:

  L = L_id + L_triplet + lambda_iam L_iam + lambda_sp L_sp + lambda_rec L_rec + lambda_sc_id L_sc_id

then the global-norm clip, AdamW per parameter group (warm-up + cosine schedule, weight-decay mask,
frozen paths), the EMA of the momentum encoder after the optimizer step, the BNNeck running
statistics and the L_sp queue. Towers: `transformers.BertModel` for the text encoder and
`transformers`' `ViTLayer` blocks for the image encoder (our conv stem / patch embedding, drop
path and masked-patch path around them); the decoder, heads, BNNeck and losses are written here.
The BoT baseline's step is ReText's Re-ID branch alone, so it is covered as well.

  step = TorchTrainStep(method, jax.device_get(state))      # weights, stats, EMA, Adam moments
  metrics = step(step.to_torch(host_batch))                  # one step, like ours
  total, metrics, _ = step.loss(step.to_torch(host_batch))   # the losses only

Every leaf of our state maps to one torch tensor through `key_table` (ours -> torch name and
the layout transform); a leaf or a torch tensor left without a row is an error. Dropout and
drop path draw from torch's generator, so train-mode runs agree with ours only with every rate at 0
(`without_dropout`). Needs transformers >= 5 (its `ViTLayer` with q_proj / o_proj / mlp.fc1).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import optax
import torch
import torch.nn.functional as F
import transformers
from flax import traverse_util
from torch import nn
from transformers.models.vit.modeling_vit import ViTLayer

from retext_jax import optim
from retext_jax.methods import base
from retext_jax.methods.retext.model import ReTextConfig
from retext_jax.models import vit as jvit

# Our activation names (retext_jax.models.layers) -> transformers' ACT2FN names, same formulas.
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "gelu_new": "gelu_new",
                  "quick_gelu": "quick_gelu", "relu": "relu"}


def without_dropout(method: base.Method) -> tuple[base.Method, list[str]]:
  """The same method with every dropout / drop-path rate of its towers at 0 (the parameters do
  not depend on them), and the names of the rates that were not 0 already: the only way a
  train-mode step in torch and in JAX can draw the same (no) random masks."""
  mc = method.model_config
  changed = []
  vit_rates = {f: 0.0 for f in ("dropout_rate", "attn_dropout_rate", "drop_path_rate")}
  changed += [f"vit.{f}" for f in vit_rates if getattr(mc.vit, f)]
  new = {"vit": dataclasses.replace(mc.vit, **vit_rates)}
  if getattr(mc, "text", None) is not None:
    text_rates = {f: 0.0 for f in ("dropout_rate", "attn_dropout_rate")}
    changed += [f"text.{f}" for f in text_rates if getattr(mc.text, f)]
    new["text"] = dataclasses.replace(mc.text, **text_rates)
  return type(method)(method.config, dataclasses.replace(mc, **new)), changed


def lr_at(step: int, peak: float, total_steps: int, warmup_steps: int,
          end_factor: float = 0.0) -> float:
  """`retext_jax.optim.schedule` in plain Python: linear warm-up from 0, then cosine to
  peak * end_factor at total_steps (the same clamping of warm-up and decay lengths)."""
  warmup = min(warmup_steps, max(total_steps - 1, 0))
  decay = max(total_steps, warmup + 1)
  if step < warmup:
    return peak * step / warmup
  t = min(step - warmup, decay - warmup) / (decay - warmup)
  return peak * ((1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * t)) + end_factor)


# ----------------------------------------------------------------------------------------------
# Modules


def drop_path(x: torch.Tensor, rate: float, train: bool) -> torch.Tensor:
  """Per-sample stochastic depth, survivors rescaled (as ours and timm)."""
  if not train or rate == 0.0:
    return x
  keep = 1.0 - rate
  survive = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device) < keep
  return torch.where(survive, x / keep, torch.zeros_like(x))


class ConvStem(nn.Module):
  """Our `ConvStem`: log2(patch) 3x3 stride-2 convs, each + LayerNorm (eps 1e-6, Flax's default)
  + tanh GELU (Flax's `nn.gelu` default), widths doubling up to `width`, then a 1x1 projection."""

  def __init__(self, channels: int, width: int, patch: int):
    super().__init__()
    n = int(round(math.log2(patch)))
    widths = [width >> (n - 1 - i) for i in range(n)]
    self.convs = nn.ModuleList(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        for c_in, c_out in zip([channels] + widths[:-1], widths, strict=True))
    self.norms = nn.ModuleList(nn.LayerNorm(w, eps=1e-6) for w in widths)
    self.proj = nn.Conv2d(widths[-1], width, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW
    for conv, norm in zip(self.convs, self.norms, strict=True):
      x = norm(conv(x).permute(0, 2, 3, 1))
      x = F.gelu(x, approximate="tanh").permute(0, 3, 1, 2)
    return self.proj(x)


class ImageEncoder(nn.Module):
  """Our ViT (retext_jax.models.vit) around transformers' `ViTLayer` blocks: stem, class token,
  position and camera embeddings, visible-patch gathering for masked images, drop path."""

  def __init__(self, cfg: jvit.ViTConfig, attn_implementation: str = "sdpa"):
    super().__init__()
    self.cfg = cfg
    d = cfg.hidden_size
    if cfg.stem == "conv":
      self.stem = ConvStem(cfg.channels, d, cfg.patch_size)
    else:
      self.patch_embed = nn.Conv2d(cfg.channels, d, cfg.patch_size, stride=cfg.patch_stride)
    self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
    self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.num_patches, d))
    if cfg.num_cameras:
      self.camera_embed = nn.Parameter(torch.zeros(cfg.num_cameras, d))
    hf = transformers.ViTConfig(
        hidden_size=d, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.mlp_dim, hidden_act=HF_ACTIVATIONS[cfg.activation],
        layer_norm_eps=cfg.layer_norm_eps, hidden_dropout_prob=cfg.dropout_rate,
        attention_probs_dropout_prob=cfg.attn_dropout_rate, image_size=list(cfg.image_size),
        patch_size=cfg.patch_size, num_channels=cfg.channels, qkv_bias=True,
        attn_implementation=attn_implementation)
    self.layers = nn.ModuleList(ViTLayer(hf) for _ in range(cfg.num_layers))
    if self.layers and not (hasattr(self.layers[0].attention, "q_proj")
                            and hasattr(self.layers[0], "mlp")):
      raise RuntimeError(f"transformers {transformers.__version__}: ViTLayer lacks "
                         "attention.q_proj / mlp (the layout of transformers >= 5)")
    self.drop_path_rates = [float(r) for r in np.linspace(0.0, cfg.drop_path_rate,
                                                          cfg.num_layers)]
    self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
    if cfg.pooler:
      self.pooler = nn.Linear(d, d)

  def _block(self, layer: ViTLayer, x: torch.Tensor, rate: float) -> torch.Tensor:
    """`ViTLayer.forward` with our drop path on both residual branches, and our MLP's dropout
    between fc1 and fc2 (every preset has dropout_rate 0)."""
    h, _ = layer.attention(layer.layernorm_before(x))
    x = x + drop_path(layer.dropout(h), rate, self.training)
    h = layer.mlp.activation_fn(layer.mlp.fc1(layer.layernorm_after(x)))
    h = layer.mlp.fc2(F.dropout(h, self.cfg.dropout_rate, self.training))
    return x + drop_path(layer.dropout(h), rate, self.training)

  def forward(self, images: torch.Tensor, camera: torch.Tensor | None = None,
              patch_mask: torch.Tensor | None = None, num_masked: int = 0
              ) -> dict[str, torch.Tensor]:
    cfg = self.cfg
    x = images.permute(0, 3, 1, 2)  # ours are NHWC
    b = x.shape[0]
    if cfg.stem == "conv":
      if patch_mask is not None:  # masked patches blanked before the 3x3 convs, as ours
        p = cfg.patch_size
        grid = patch_mask.view(b, *cfg.grid)
        pixels = grid.repeat_interleave(p, 1).repeat_interleave(p, 2)
        x = x.masked_fill(pixels[:, None], 0.0)
      x = self.stem(x)
    else:
      x = self.patch_embed(x)
    x = x.flatten(2).transpose(1, 2)  # [B, N, D], row-major grid: our reshape of NHWC
    x = torch.cat([self.cls_token.expand(b, -1, -1).to(x.dtype), x], dim=1)
    x = x + self.pos_embed.to(x.dtype)
    if cfg.num_cameras:
      if camera is None:
        raise ValueError("this ViT has a camera embedding: pass camera=[B] int ids")
      x = x + (cfg.camera_coef * self.camera_embed[camera])[:, None, :].to(x.dtype)
    if patch_mask is not None:  # visible patches first, in their order (stable sort)
      order = torch.argsort(patch_mask.to(torch.int32), dim=1, stable=True)
      keep = order[:, :patch_mask.shape[1] - num_masked]
      patches = torch.gather(x[:, 1:], 1, keep[..., None].expand(-1, -1, x.shape[-1]))
      x = torch.cat([x[:, :1], patches], dim=1)
    x = F.dropout(x, cfg.dropout_rate, self.training)
    for layer, rate in zip(self.layers, self.drop_path_rates, strict=True):
      x = self._block(layer, x, rate)
    x = self.norm(x)
    return {"tokens": x, "cls": x[:, 0], "patch_tokens": x[:, 1:]}


class Attention(nn.Module):
  """Our `layers.Attention` (query/key/value/out Dense, scale 1/sqrt(head_dim)); `mask` is
  boolean [B, 1, 1, Lk], True = attend."""

  def __init__(self, dim: int, num_heads: int):
    super().__init__()
    self.num_heads = num_heads
    self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))

  def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    context = x if context is None else context
    b, lq, d = x.shape
    heads = lambda y: y.view(b, y.shape[1], self.num_heads, d // self.num_heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(context)),
                                         heads(self.value(context)), attn_mask=mask)
    return self.out(out.transpose(1, 2).reshape(b, lq, d))


class Mlp(nn.Module):
  def __init__(self, dim: int, hidden: int):
    super().__init__()
    self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc2(F.gelu(self.fc1(x)))  # erf GELU: our "gelu"


class CrossBlock(nn.Module):
  """The decoder block: pre-norm self-attention, cross-attention to the caption, MLP."""

  def __init__(self, dim: int, num_heads: int):
    super().__init__()
    for name in ("norm1", "norm2", "norm3", "norm_text"):
      setattr(self, name, nn.LayerNorm(dim, eps=1e-6))
    self.self_attn, self.cross_attn = Attention(dim, num_heads), Attention(dim, num_heads)
    self.mlp = Mlp(dim, 4 * dim)

  def forward(self, x, text, text_mask):
    x = x + self.self_attn(self.norm1(x))
    x = x + self.cross_attn(self.norm2(x), self.norm_text(text), text_mask)
    return x + self.mlp(self.norm3(x))


class Decoder(nn.Module):
  """The text-guided masked-patch decoder (retext_jax/methods/retext/decoder.py)."""

  def __init__(self, mc: ReTextConfig):
    super().__init__()
    w, p = mc.decoder_width, mc.vit.patch_size
    self.embed = nn.Linear(mc.vit.hidden_size, w)
    self.mask_token = nn.Parameter(torch.zeros(w))
    self.pos_embedding = nn.Parameter(torch.zeros(1, mc.vit.num_patches, w))
    self.text_embed = nn.Linear(mc.text.hidden_size, w)
    self.blocks = nn.ModuleList(CrossBlock(w, mc.decoder_heads) for _ in range(mc.decoder_depth))
    self.norm = nn.LayerNorm(w, eps=1e-6)
    self.head = nn.Linear(w, p * p * 3)

  def forward(self, visible, patch_mask, text_states, text_mask):
    x = self.embed(visible)
    b, n = patch_mask.shape
    keep = torch.argsort(patch_mask.to(torch.int32), dim=1, stable=True)[:, :x.shape[1]]
    fill = self.mask_token.to(x.dtype).expand(b, n, x.shape[-1])
    x = fill.scatter(1, keep[..., None].expand(-1, -1, x.shape[-1]), x)
    x = x + self.pos_embedding.to(x.dtype)
    text = self.text_embed(text_states)
    mask = text_mask.bool()[:, None, None, :]
    for block in self.blocks:
      x = block(x, text, mask)
    return self.head(self.norm(x)).float()


class BNNeck(nn.Module):
  """Flax's BatchNorm as the BNNeck uses it: no shift, eps 1e-5, biased batch variance
  E[x^2] - E[x]^2 (clipped at 0), running stats r <- 0.9 r + 0.1 batch. torch's BatchNorm1d
  keeps the unbiased variance, hence this module. The new running stats are returned, not
  written: the rest of the step still reads the old ones, as ours does."""

  def __init__(self, dim: int):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(dim))
    self.register_buffer("running_mean", torch.zeros(dim))
    self.register_buffer("running_var", torch.ones(dim))
    self.momentum, self.eps = 0.9, 1e-5

  def forward(self, x: torch.Tensor, train: bool):
    if not train:
      return (x - self.running_mean) * torch.rsqrt(self.running_var + self.eps) * self.weight, None
    mean = x.mean(0)
    var = torch.clamp(torch.mean(x * x, 0) - mean * mean, min=0.0)
    y = (x - mean) * torch.rsqrt(var + self.eps) * self.weight
    m = self.momentum
    return y, (m * self.running_mean + (1 - m) * mean.detach(),
               m * self.running_var + (1 - m) * var.detach())


class ReTextTorch(nn.Module):
  """ReText's module (retext_jax/methods/retext/model.py) plus the momentum encoder, a copy of
  `image_encoder` and `image_proj` that only the EMA updates (always in eval mode). With
  `matching=False` only the Re-ID branch (ViT, BNNeck, classifier): the BoT baseline."""

  def __init__(self, mc: ReTextConfig, attn_implementation: str = "sdpa", matching: bool = True):
    super().__init__()
    self.mc, self.matching = mc, matching
    self.image_encoder = ImageEncoder(mc.vit, attn_implementation)
    self.bnneck = BNNeck(mc.vit.hidden_size)
    self.classifier = nn.Linear(mc.vit.hidden_size, mc.num_classes, bias=False)
    if not matching:
      self.train()
      return
    self.image_proj = nn.Linear(mc.vit.hidden_size, mc.embed_dim)
    if mc.num_sc_classes:
      self.sc_classifier = nn.Linear(mc.vit.hidden_size, mc.num_sc_classes, bias=False)
    if mc.text is not None:
      t = mc.text
      hf = transformers.BertConfig(
          vocab_size=t.vocab_size, hidden_size=t.hidden_size, num_hidden_layers=t.num_layers,
          num_attention_heads=t.num_heads, intermediate_size=t.intermediate_size,
          max_position_embeddings=t.max_position_embeddings, type_vocab_size=t.type_vocab_size,
          hidden_act=HF_ACTIVATIONS[t.activation], layer_norm_eps=t.layer_norm_eps,
          hidden_dropout_prob=t.dropout_rate, attention_probs_dropout_prob=t.attn_dropout_rate,
          attn_implementation=attn_implementation)
      self.text_encoder = transformers.BertModel(hf, add_pooling_layer=t.pooler)
      self.text_proj = nn.Linear(t.hidden_size, mc.embed_dim)
    if mc.use_rec:
      self.decoder = Decoder(mc)
    self.momentum_encoder = copy.deepcopy(self.image_encoder).requires_grad_(False)
    self.momentum_proj = copy.deepcopy(self.image_proj).requires_grad_(False)
    self.train()

  def train(self, mode: bool = True) -> ReTextTorch:
    super().train(mode)
    if self.matching:
      self.momentum_encoder.eval()
      self.momentum_proj.eval()
    return self

  def reid(self, images, camids=None):
    camera = camids if self.mc.vit.num_cameras else None
    feat = self.image_encoder(images, camera=camera)["cls"].float()
    bn, stats = self.bnneck(feat, train=self.training)
    return {"feat": feat, "bn_feat": bn, "logits": self.classifier(bn).float(), "stats": stats}

  def embed_image(self, images, momentum: bool = False):
    """The matching embedding; the BNNeck reads its running stats here (never updated)."""
    enc, proj = ((self.momentum_encoder, self.momentum_proj) if momentum
                 else (self.image_encoder, self.image_proj))
    cls = enc(images)["cls"].float()
    feat = self.bnneck(cls, train=False)[0] if self.mc.match_feature == "bnneck" else cls
    return {"cls": cls, "emb": proj(feat).float()}

  def embed_text(self, tokens, token_mask):
    states = self.text_encoder(input_ids=tokens, attention_mask=token_mask).last_hidden_state
    return {"states": states, "emb": self.text_proj(states[:, 0]).float()}

  def reconstruct(self, images, patch_mask, text_states, text_mask):
    out = self.image_encoder(images, patch_mask=patch_mask, num_masked=self.mc.num_masked)
    return self.decoder(out["patch_tokens"], patch_mask, text_states, text_mask)


# ----------------------------------------------------------------------------------------------
# Losses (the formulas of retext_jax/losses.py)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
  return x / torch.clamp(torch.sqrt(torch.sum(x * x, dim=-1, keepdim=True)), min=1e-12)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
  logp = F.log_softmax(logits, dim=-1)
  return -torch.mean(torch.sum(torch.where(targets > 0, targets * logp, 0.0), dim=-1))


def cross_entropy_label_smoothing(logits, labels, eps: float) -> torch.Tensor:
  """CE against (1 - eps) onehot + eps / C (optax.smooth_labels)."""
  c = logits.shape[-1]
  targets = F.one_hot(labels.long(), c).to(logits.dtype) * (1.0 - eps) + eps / c
  return torch.mean(-torch.sum(targets * F.log_softmax(logits, dim=-1), dim=-1))


def batch_hard_triplet(features, labels, margin: float, soft_margin: bool) -> torch.Tensor:
  """Hardest positive (farthest same label, not itself), hardest negative (closest other
  label) on sqrt(max(squared distance, 1e-12)); anchors lacking either are left out."""
  sq = (features.pow(2).sum(-1)[:, None] + features.pow(2).sum(-1)[None, :]
        - 2.0 * features @ features.T)
  dist = torch.sqrt(torch.clamp(sq, min=1e-12))
  same = labels[:, None] == labels[None, :]
  pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=features.device)
  neg = ~same
  d_ap = torch.where(pos, dist, 0.0).max(dim=1).values
  upper = dist.detach().max() + 1.0
  d_an = torch.where(neg, dist, upper).min(dim=1).values
  diff = d_ap - d_an
  per = F.softplus(diff) if soft_margin else F.relu(diff + margin)
  valid = pos.any(1) & neg.any(1)
  return torch.where(valid, per, 0.0).sum() / torch.clamp(valid.sum(), min=1)


def identity_targets(ids_a, ids_b) -> torch.Tensor:
  y = (ids_a[:, None] == ids_b[None, :]).float()
  return y / torch.clamp(y.sum(1, keepdim=True), min=1.0)


def identity_aware_matching(img, txt, ids, temperature: float, alpha: float,
                            momentum_img=None) -> torch.Tensor:
  """Symmetric soft-target CE; image->text targets mix identity labels with the momentum
  image-text softmax, text->image targets are the transpose renormalised per row."""
  v, t = l2_normalize(img), l2_normalize(txt)
  logits = v @ t.T / temperature
  q = identity_targets(ids, ids)
  if alpha:
    vm = l2_normalize(momentum_img).detach()
    q = (1.0 - alpha) * q + alpha * F.softmax(vm @ t.detach().T / temperature, dim=1)
  q = q.detach()
  q_t2i = q.T / torch.clamp(q.T.sum(1, keepdim=True), min=1e-12)
  return 0.5 * (soft_cross_entropy(logits, q) + soft_cross_entropy(logits.T, q_t2i))


def sdm(img, txt, ids, logit_scale: float, eps: float = 1e-8) -> torch.Tensor:
  """IRRA's similarity-distribution matching, both directions summed."""
  logits = logit_scale * (l2_normalize(img) @ l2_normalize(txt).T)
  log_q = torch.log(identity_targets(ids, ids) + eps)

  def kl(x):
    logp = F.log_softmax(x, dim=1)
    return torch.mean(torch.sum(logp.exp() * (logp - log_q), dim=1))

  return kl(logits) + kl(logits.T)


def structure_preserving(student, momentum, ids, temperature: float, queue_emb=None,
                         queue_ids=None) -> torch.Tensor:
  """Multi-positive InfoNCE of student view 1 against momentum view 2 (+ queue; id -1 empty)."""
  keys, key_ids = momentum, ids
  if queue_emb is not None:
    keys = torch.cat([keys, queue_emb.to(keys.dtype)], 0)
    key_ids = torch.cat([ids, queue_ids.to(ids.dtype)], 0)
  keys = l2_normalize(keys).detach()
  logits = l2_normalize(student) @ keys.T / temperature
  valid = key_ids >= 0
  logits = torch.where(valid[None, :], logits, -torch.inf)
  y = ((ids[:, None] == key_ids[None, :]) & valid[None, :]).float()
  return soft_cross_entropy(logits, y / torch.clamp(y.sum(1, keepdim=True), min=1.0))


def patchify(images: torch.Tensor, p: int) -> torch.Tensor:
  """NHWC -> [B, N, p*p*C], row-major patches, (row, column, channel) inside each."""
  b, h, w, c = images.shape
  x = images.reshape(b, h // p, p, w // p, p, c).permute(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def masked_reconstruction(pred, images, patch_mask, p: int) -> torch.Tensor:
  """MSE on per-patch normalised pixels (unbiased variance, eps 1e-6), masked patches only."""
  target = patchify(images, p).float()
  mean = target.mean(-1, keepdim=True)
  var = target.var(-1, keepdim=True, unbiased=True)
  target = (target - mean) / torch.sqrt(var + 1e-6)
  per_patch = torch.mean((pred.float() - target) ** 2, dim=-1)
  mask = patch_mask.float()
  return torch.where(mask > 0, per_patch * mask, 0.0).sum() / torch.clamp(mask.sum(), min=1.0)


# ----------------------------------------------------------------------------------------------
# Our state <-> torch: the key table


LINEAR, CONV, SAME = "linear", "conv", "same"  # layout transforms ours -> torch


def _to_torch(kind: str, x: np.ndarray) -> np.ndarray:
  if kind == LINEAR:  # Dense kernel [in, out] -> Linear weight [out, in]
    return x.T
  if kind == CONV:  # Conv kernel [h, w, in, out] -> Conv2d weight [out, in, h, w]
    return x.transpose(3, 2, 0, 1)
  return x


def _to_ours(kind: str, x: np.ndarray) -> np.ndarray:
  if kind == LINEAR:
    return x.T
  if kind == CONV:
    return x.transpose(2, 3, 1, 0)
  return x


def key_table(mc: ReTextConfig, queue: bool = False, matching: bool = True
              ) -> list[tuple[str, str, str]]:
  """(our state path, torch state_dict name, transform) for every tensor of the step: params,
  batch_stats, the EMA copy (-> momentum_*) and the L_sp queue (`matching=False`: BoT's)."""
  rows: list[tuple[str, str, str]] = []

  def dense(ours: str, theirs: str, bias: bool = True) -> None:
    rows.append((f"{ours}/kernel", f"{theirs}.weight", LINEAR))
    if bias:
      rows.append((f"{ours}/bias", f"{theirs}.bias", SAME))

  def norm(ours: str, theirs: str) -> None:
    rows.extend([(f"{ours}/scale", f"{theirs}.weight", SAME),
                 (f"{ours}/bias", f"{theirs}.bias", SAME)])

  def conv(ours: str, theirs: str) -> None:
    rows.extend([(f"{ours}/kernel", f"{theirs}.weight", CONV),
                 (f"{ours}/bias", f"{theirs}.bias", SAME)])

  def image_encoder(ours: str, theirs: str) -> None:
    v = mc.vit
    if v.stem == "conv":
      for i in range(int(round(math.log2(v.patch_size)))):
        conv(f"{ours}/stem/conv_{i}", f"{theirs}.stem.convs.{i}")
        norm(f"{ours}/stem/norm_{i}", f"{theirs}.stem.norms.{i}")
      conv(f"{ours}/stem/proj", f"{theirs}.stem.proj")
    else:
      conv(f"{ours}/patch_embed", f"{theirs}.patch_embed")
    for name in ("cls_token", "pos_embed") + (("camera_embed",) if v.num_cameras else ()):
      rows.append((f"{ours}/{name}", f"{theirs}.{name}", SAME))
    for i in range(v.num_layers):
      o, t = f"{ours}/block_{i}", f"{theirs}.layers.{i}"
      norm(f"{o}/norm1", f"{t}.layernorm_before")
      norm(f"{o}/norm2", f"{t}.layernorm_after")
      for a, b in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"), ("out", "o_proj")):
        dense(f"{o}/attn/{a}", f"{t}.attention.{b}")
      dense(f"{o}/mlp/fc1", f"{t}.mlp.fc1")
      dense(f"{o}/mlp/fc2", f"{t}.mlp.fc2")
    norm(f"{ours}/norm", f"{theirs}.norm")
    if v.pooler:
      dense(f"{ours}/pooler", f"{theirs}.pooler")

  image_encoder("params/image_encoder", "image_encoder")
  rows.append(("params/bnneck/scale", "bnneck.weight", SAME))
  rows.append(("batch_stats/bnneck/mean", "bnneck.running_mean", SAME))
  rows.append(("batch_stats/bnneck/var", "bnneck.running_var", SAME))
  dense("params/classifier", "classifier", bias=False)
  if not matching:
    return rows
  image_encoder("ema/image_encoder", "momentum_encoder")
  dense("params/image_proj", "image_proj")
  dense("ema/image_proj", "momentum_proj")
  if mc.num_sc_classes:
    dense("params/sc_classifier", "sc_classifier", bias=False)
  if mc.text is not None:
    o, t = "params/text_encoder", "text_encoder"
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
      rows.append((f"{o}/{name}/embedding", f"{t}.embeddings.{name}.weight", SAME))
    norm(f"{o}/embed_norm", f"{t}.embeddings.LayerNorm")
    for i in range(mc.text.num_layers):
      lo, lt = f"{o}/layer_{i}", f"{t}.encoder.layer.{i}"
      for a in ("query", "key", "value"):
        dense(f"{lo}/attn/{a}", f"{lt}.attention.self.{a}")
      dense(f"{lo}/attn/out", f"{lt}.attention.output.dense")
      norm(f"{lo}/attn_norm", f"{lt}.attention.output.LayerNorm")
      dense(f"{lo}/mlp/fc1", f"{lt}.intermediate.dense")
      dense(f"{lo}/mlp/fc2", f"{lt}.output.dense")
      norm(f"{lo}/mlp_norm", f"{lt}.output.LayerNorm")
    if mc.text.pooler:
      dense(f"{o}/pooler", f"{t}.pooler.dense")
    dense("params/text_proj", "text_proj")
  if mc.use_rec:
    o, t = "params/decoder", "decoder"
    dense(f"{o}/embed", f"{t}.embed")
    dense(f"{o}/text_embed", f"{t}.text_embed")
    rows.append((f"{o}/mask_token", f"{t}.mask_token", SAME))
    rows.append((f"{o}/pos_embedding", f"{t}.pos_embedding", SAME))
    for i in range(mc.decoder_depth):
      bo, bt = f"{o}/block_{i}", f"{t}.blocks.{i}"
      for n in ("norm1", "norm2", "norm3", "norm_text"):
        norm(f"{bo}/{n}", f"{bt}.{n}")
      for attn in ("self_attn", "cross_attn"):
        for a in ("query", "key", "value", "out"):
          dense(f"{bo}/{attn}/{a}", f"{bt}.{attn}.{a}")
      dense(f"{bo}/mlp/fc1", f"{bt}.mlp.fc1")
      dense(f"{bo}/mlp/fc2", f"{bt}.mlp.fc2")
    norm(f"{o}/norm", f"{t}.norm")
    dense(f"{o}/head", f"{t}.head")
  if queue:
    rows += [("queue/emb", "queue_emb", SAME), ("queue/ids", "queue_ids", SAME),
             ("queue/ptr", "queue_ptr", SAME)]
  return rows


def _tensor(x: np.ndarray) -> torch.Tensor:
  """A contiguous torch copy: `torch.tensor` keeps a transposed array's strides, which the fused
  AdamW kernel would read as if laid out like its parameter."""
  return torch.tensor(np.array(x, order="C"))  # (np.ascontiguousarray makes 0-d arrays 1-d)


def _flat_state(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Our state's tensors the key table covers, flattened to "params/...", "ema/...", ..."""
  out = {}
  for section in ("params", "batch_stats", "ema", "queue"):
    if section in state and state[section]:
      for k, v in traverse_util.flatten_dict(dict(state[section]), sep="/").items():
        out[f"{section}/{k}"] = np.asarray(v)
  return out


class UnmappedKeyError(KeyError):
  """A state leaf or a torch tensor without a row in the key table (or of another shape)."""


def check_table(rows, ours: Mapping[str, np.ndarray], theirs: Mapping[str, torch.Tensor]) -> None:
  """Every state leaf has a row, every row a leaf and a torch tensor, every torch tensor a row,
  and shapes agree after the transform: all offenders are listed at once."""
  table_ours = {r[0] for r in rows}
  table_theirs = {r[1] for r in rows}
  problems = []
  for what, keys in (("our state leaves without a row", set(ours) - table_ours),
                     ("rows naming no leaf of our state", table_ours - set(ours)),
                     ("torch tensors without a row", set(theirs) - table_theirs),
                     ("rows naming no torch tensor", table_theirs - set(theirs))):
    if keys:
      problems.append(f"{len(keys)} {what}: {', '.join(sorted(keys))}")
  for o, t, kind in rows:
    if o in ours and t in theirs:
      shape = _to_torch(kind, ours[o]).shape
      if tuple(shape) != tuple(theirs[t].shape):
        problems.append(f"{o} -> {t}: {tuple(shape)} vs torch {tuple(theirs[t].shape)}")
  if problems:
    raise UnmappedKeyError("key table ours -> torch: " + "; ".join(problems))


# ----------------------------------------------------------------------------------------------
# The train step


class TorchTrainStep:
  """Our train step in torch, on the weights, statistics, EMA, queue, Adam moments and step
  count of one of our train states (host arrays: `jax.device_get(state)`).

  `compile=True` runs the forward + losses through `torch.compile` (backward through
  AOTAutograd); the clip, AdamW, EMA and statistics updates stay eager. `autocast` (e.g.
  torch.bfloat16) wraps the forward in `torch.autocast`, parameters stay float32 as ours.
  """

  def __init__(self, method: base.Method, state: Mapping[str, Any], *, device: str = "cpu",
               autocast: torch.dtype | None = None, compile: bool = False,
               attn_implementation: str = "sdpa"):
    if method.name not in ("retext", "bot"):
      raise ValueError(f"the torch reference covers the retext and bot methods, not {method.name}")
    self.method, self.config = method, method.config
    self.matching = method.name == "retext"
    mc = method.model_config
    self.mc = mc if self.matching else ReTextConfig(vit=mc.vit, text=None,
                                                    num_classes=mc.num_classes)
    self.lc, oc = self.config.loss, self.config.optim
    if oc["name"] != "adamw":
      raise ValueError(f"the torch reference implements optim.name='adamw', not {oc['name']!r}")
    self.device = torch.device(device)
    self.autocast = autocast
    self.weights = {k: float(self.lc.get(f"lambda_{k}", 0.0)) for k in ("iam", "sp", "rec",
                                                                         "sc_id")}
    self.use_singlecam = base.SINGLECAM in method.streams
    self.model = ReTextTorch(self.mc, attn_implementation, self.matching).to(self.device)
    ours = _flat_state(state)
    self.rows = key_table(self.mc, queue=bool(state.get("queue")), matching=self.matching)
    if state.get("queue"):
      q = state["queue"]
      self.model.register_buffer("queue_emb", torch.zeros(np.shape(q["emb"])))
      self.model.register_buffer("queue_ids", torch.zeros(np.shape(q["ids"]), dtype=torch.int32))
      self.model.register_buffer("queue_ptr", torch.zeros((), dtype=torch.int32))
    theirs = self.model.state_dict()
    check_table(self.rows, ours, theirs)
    with torch.no_grad():
      for o, t, kind in self.rows:
        theirs[t].copy_(_tensor(_to_torch(kind, ours[o])))
    self.step_count = int(np.asarray(state["step"]))
    self._build_optimizer(state, oc)
    self._forward = torch.compile(self._losses) if compile else self._losses

  # ------------------------------------------------------------------------------ optimizer

  def _build_optimizer(self, state: Mapping[str, Any], oc: Mapping[str, Any]) -> None:
    """Torch param groups from our labels (`optim.param_groups`) and decay mask
    (`optim.decay_mask`); frozen paths get gradients (they count in the clipping norm, as
    ours) but no optimizer; Adam moments are copied from our opt_state."""
    params = state["params"]
    lr_mults = dict(oc.get("lr_mults") or {})
    labels = traverse_util.flatten_dict(
        optim.param_groups(params, self.method.backbone_keys, oc.get("freeze", ""), lr_mults),
        sep="/")
    decay = traverse_util.flatten_dict(optim.decay_mask(params), sep="/")
    self.mults = {optim.BACKBONE: 1.0, optim.HEAD: float(oc["head_lr_mult"]),
                  **{k: float(v) for k, v in lr_mults.items()}}
    named = dict(self.model.named_parameters())
    self.by_ours = {o[len("params/"):]: (named[t], kind) for o, t, kind in self.rows
                    if o.startswith("params/")}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for path, label in labels.items():
      if label != optim.FROZEN:
        groups.setdefault((label, bool(decay[path])), []).append(self.by_ours[path][0])
    self.trainable = [p for p in self.model.parameters() if p.requires_grad]
    in_optimizer = {id(p) for ps in groups.values() for p in ps}
    self.frozen = [p for p in self.trainable if id(p) not in in_optimizer]
    wd = float(oc["weight_decay"])
    self.optimizer = torch.optim.AdamW(
        [{"params": ps, "label": label, "weight_decay": wd if dec else 0.0, "lr": 0.0}
         for (label, dec), ps in groups.items()],
        betas=(float(oc.get("b1", 0.9)), float(oc.get("b2", 0.999))), eps=1e-8, fused=True)
    self.clip_norm = float(oc.get("clip_norm") or 0.0)
    self.oc = oc
    self._load_moments(state["opt_state"])

  def _load_moments(self, opt_state: Any) -> None:
    """Copies mu / nu / count of every group's ScaleByAdamState (a fresh state: nothing)."""
    is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)
    adam = [s for s in jax.tree_util.tree_leaves(opt_state, is_leaf=is_adam) if is_adam(s)]
    for s in adam:
      count = int(np.asarray(s.count))
      if count == 0:
        continue
      for tree, slot in ((s.mu, "exp_avg"), (s.nu, "exp_avg_sq")):
        for path, value in traverse_util.flatten_dict(dict(tree), sep="/").items():
          if isinstance(value, optax.MaskedNode):
            continue
          p, kind = self.by_ours[path]
          st = self.optimizer.state[p]
          st[slot] = _tensor(_to_torch(kind, np.asarray(value))).to(self.device)
          st["step"] = torch.tensor(float(count), device=self.device)  # fused: on p's device

  def learning_rates(self, step: int) -> dict[str, float]:
    oc = self.oc
    return {g: lr_at(step, float(oc["lr"]) * m, int(self.config.total_steps),
                     int(oc["warmup_steps"]), float(oc.get("end_factor", 0.0)))
            for g, m in self.mults.items()}

  # --------------------------------------------------------------------------------- losses

  def to_torch(self, batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in batch.items():
      t = torch.from_numpy(np.ascontiguousarray(v))
      out[k] = (t.long() if k.endswith(("tokens", "token_mask")) else t).to(self.device)
    return out

  def _losses(self, batch: Mapping[str, torch.Tensor]):
    """(total, {metric: loss}, aux): our `ReTextMethod.loss_fn`, term by term."""
    lc, w, m = self.lc, self.weights, self.model
    metrics, aux = {}, {}
    reid = m.reid(batch["multicam/image"], batch.get("multicam/camid"))
    aux["bn_stats"] = reid["stats"]
    metrics["loss/id"] = cross_entropy_label_smoothing(reid["logits"], batch["multicam/pid"],
                                                       float(lc.label_smoothing))
    metrics["loss/triplet"] = batch_hard_triplet(reid["feat"], batch["multicam/pid"],
                                                 float(lc.triplet_margin), bool(lc.soft_margin))
    total = metrics["loss/id"] + metrics["loss/triplet"]
    if not self.use_singlecam:
      return total, metrics, aux
    pid = batch["singlecam/pid"]
    img = m.embed_image(batch["singlecam/view1"])
    mom = None
    if w["sp"] > 0 or (w["iam"] > 0 and lc.alpha > 0):
      with torch.no_grad():
        mom = m.embed_image(batch["singlecam/view2"], momentum=True)["emb"]
    aux["momentum_emb"] = mom
    if w["sc_id"] > 0:
      metrics["loss/sc_id"] = cross_entropy_label_smoothing(
          m.sc_classifier(img["cls"]).float(), pid, float(lc.label_smoothing))
      total = total + w["sc_id"] * metrics["loss/sc_id"]
    if w["iam"] > 0 or w["rec"] > 0:
      txt = m.embed_text(batch["singlecam/tokens"], batch["singlecam/token_mask"])
    if w["iam"] > 0:
      if lc.matching == "sdm":
        metrics["loss/iam"] = sdm(img["emb"], txt["emb"], pid, 1.0 / float(lc.temperature))
      else:
        metrics["loss/iam"] = identity_aware_matching(img["emb"], txt["emb"], pid,
                                                      float(lc.temperature), float(lc.alpha), mom)
      total = total + w["iam"] * metrics["loss/iam"]
    if w["sp"] > 0:
      queued = hasattr(m, "queue_emb")
      metrics["loss/sp"] = structure_preserving(
          img["emb"], mom, pid, float(lc.sp_temperature),
          m.queue_emb if queued else None, m.queue_ids if queued else None)
      total = total + w["sp"] * metrics["loss/sp"]
    if w["rec"] > 0:
      pred = m.reconstruct(batch["singlecam/view1"], batch["singlecam/patch_mask"],
                           txt["states"], batch["singlecam/token_mask"])
      metrics["loss/rec"] = masked_reconstruction(pred, batch["singlecam/view1"],
                                                  batch["singlecam/patch_mask"],
                                                  self.mc.vit.patch_size)
      total = total + w["rec"] * metrics["loss/rec"]
    return total, metrics, aux

  def loss(self, batch: Mapping[str, torch.Tensor]):
    """The step's losses (train mode, no update)."""
    with torch.autocast(self.device.type, dtype=self.autocast or torch.bfloat16,
                        enabled=self.autocast is not None):
      return self._forward(batch)

  # ----------------------------------------------------------------------------------- step

  def __call__(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One train step; returns detached metric tensors (no host sync)."""
    metrics, aux = self.backward(batch)
    metrics.update(self._update())
    self.commit(aux, batch)
    return metrics

  def backward(self, batch: Mapping[str, torch.Tensor]):
    """The losses and their gradients in `.grad` (not yet clipped); returns (detached metrics,
    aux for `commit`)."""
    self.model.train()
    self.optimizer.zero_grad(set_to_none=True)
    for p in self.frozen:
      p.grad = None
    total, metrics, aux = self.loss(batch)
    total.backward()
    out = {k: v.detach() for k, v in metrics.items()}
    out["loss/total"] = total.detach()
    return out, aux

  def commit(self, aux: Mapping[str, Any], batch: Mapping[str, torch.Tensor]) -> None:
    """Writes the step's BNNeck running statistics and pushes the momentum embeddings into
    the L_sp queue (after the forward, as our step's state updates)."""
    m = self.model
    with torch.no_grad():
      if aux["bn_stats"] is not None:
        m.bnneck.running_mean.copy_(aux["bn_stats"][0])
        m.bnneck.running_var.copy_(aux["bn_stats"][1])
      if hasattr(m, "queue_emb") and aux.get("momentum_emb") is not None:
        size, b = m.queue_emb.shape[0], aux["momentum_emb"].shape[0]
        slots = (m.queue_ptr + torch.arange(b, device=self.device)) % size
        m.queue_emb[slots] = aux["momentum_emb"].float()
        m.queue_ids[slots] = batch["singlecam/pid"].to(m.queue_ids.dtype)
        m.queue_ptr.copy_((m.queue_ptr + b) % size)

  def gradients_as_ours(self) -> dict[str, np.ndarray]:
    """The current `.grad` of every parameter in our layout (unused parameters: zeros)."""
    return {path: _to_ours(kind, (p.grad if p.grad is not None else torch.zeros_like(p))
                           .detach().float().cpu().numpy())
            for path, (p, kind) in self.by_ours.items()}

  def apply_gradients(self, grads: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The update half of the step with given gradients (our layout, "image_encoder/..."
    paths, every parameter): checks clip + AdamW + schedule + EMA apart from the forward."""
    missing = sorted(set(self.by_ours) - set(grads))
    if missing:
      raise UnmappedKeyError(f"gradients missing for {', '.join(missing)}")
    for path, (p, kind) in self.by_ours.items():
      p.grad = _tensor(_to_torch(kind, np.asarray(grads[path]))).to(p.device, p.dtype)
    return self._update()

  def _update(self) -> dict[str, torch.Tensor]:
    """Global-norm clip, AdamW at this step's learning rates, EMA; advances the step count."""
    grads = []
    for p in self.trainable:  # unused parameters (the BERT pooler) get 0, as in JAX
      if p.grad is None:
        p.grad = torch.zeros_like(p)
      grads.append(p.grad)
    gnorm = global_norm(grads)
    if self.clip_norm:  # optax.clip_by_global_norm: g / |g| * max when |g| >= max
      scale = torch.where(gnorm < self.clip_norm, 1.0, self.clip_norm / gnorm).float()
      torch._foreach_mul_(grads, scale)
    lrs = self.learning_rates(self.step_count)
    for group in self.optimizer.param_groups:
      group["lr"] = lrs[group["label"]]
    self.optimizer.step()
    m = self.model
    with torch.no_grad():
      if self.matching:  # optax.incremental_update(params, ema, 1 - decay)
        decay = float(self.method.ema_decay)
        ema = list(m.momentum_encoder.parameters()) + list(m.momentum_proj.parameters())
        src = list(m.image_encoder.parameters()) + list(m.image_proj.parameters())
        torch._foreach_mul_(ema, decay)
        torch._foreach_add_(ema, src, alpha=1.0 - decay)
      pnorm = global_norm([p for p, _ in self.by_ours.values()])
    self.step_count += 1
    out = {"grad_norm": gnorm.float(), "param_norm": pnorm.float()}
    out.update({f"lr/{g}": torch.tensor(v) for g, v in lrs.items()})
    return out

  # ------------------------------------------------------------------------------ read back

  def state_as_ours(self) -> dict[str, np.ndarray]:
    """Every tensor of the key table in our layout, keyed by our state path."""
    sd = self.model.state_dict()
    return {o: _to_ours(kind, sd[t].detach().cpu().numpy()) for o, t, kind in self.rows}


def global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
  """sqrt(sum of squares) over 64k-entry chunks: torch's one-pass float32 norm of the 11.7M-entry
  vocabulary drifts by ~5e-4 relative (XLA's tree reduction does not); chunks bring it to ~2e-7
  at the cost of the plain `_foreach_norm`."""
  chunks = [c for t in tensors for c in t.detach().reshape(-1).split(1 << 16)]
  return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(chunks)))


def max_abs_diff(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> dict[str, float]:
  """Per key present in both: max |ours - theirs| (scalars or arrays)."""
  return {k: float(np.max(np.abs(np.asarray(ours[k], np.float64)
                                 - np.asarray(theirs[k], np.float64))))
          for k in ours if k in theirs}

