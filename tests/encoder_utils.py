"""Tiny random Hugging Face models saved to tmp folders: the references for parity tests.

torch is test-only (a CPU wheel); tests import these helpers after `pytest.importorskip("torch")`.
"""

from __future__ import annotations

import json
import os

import numpy as np

TINY_VIT = dict(
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=4,
  intermediate_size=64,
  image_size=224,
  patch_size=16,
)
TINY_BERT = dict(
  vocab_size=100,
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=4,
  intermediate_size=64,
  max_position_embeddings=64,
)


def _randomize_biases_and_norms(model, seed: int) -> None:
  """HF initialises biases to 0 and LayerNorms to 1; random values make the parity test bite."""
  import torch

  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("bias") or "layernorm" in name.lower() or "cls_token" in name:
        p.copy_(p + 0.1 * torch.randn(p.shape, generator=gen))


def save_tiny_vit(folder: str | os.PathLike, seed: int = 0, pooler: bool = True, **overrides):
  """A random tiny `ViTModel` written with save_pretrained; returns the (eval-mode) model."""
  import torch
  from transformers import ViTConfig, ViTModel

  torch.manual_seed(seed)
  model = ViTModel(ViTConfig(**{**TINY_VIT, **overrides}), add_pooling_layer=pooler).eval()
  _randomize_biases_and_norms(model, seed)
  model.save_pretrained(folder)
  return model


def save_tiny_bert(folder: str | os.PathLike, seed: int = 0, pooler: bool = True, **overrides):
  """A random tiny `BertModel` written with save_pretrained; returns the (eval-mode) model."""
  import torch
  from transformers import BertConfig, BertModel

  torch.manual_seed(seed)
  model = BertModel(BertConfig(**{**TINY_BERT, **overrides}), add_pooling_layer=pooler).eval()
  _randomize_biases_and_norms(model, seed)
  model.save_pretrained(folder)
  return model


def torch_out(model, **inputs) -> dict[str, np.ndarray]:
  """Runs an HF model on numpy inputs; returns last_hidden_state and pooler_output as numpy."""
  import torch

  with torch.no_grad():
    out = model(
      **{k: torch.from_numpy(v) for k, v in inputs.items() if not isinstance(v, bool)},
      **{k: v for k, v in inputs.items() if isinstance(v, bool)},
    )
  res = {"tokens": out.last_hidden_state.numpy()}
  if getattr(out, "pooler_output", None) is not None:
    res["pooled"] = out.pooler_output.numpy()
  return res


def max_abs_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _byte_chars():
  """The 256 printable stand-ins byte-level BPE uses for raw bytes (GPT-2 / CLIP convention)."""
  printable = (
      list(range(ord("!"), ord("~") + 1))
      + list(range(ord("¡"), ord("¬") + 1))
      + list(range(ord("®"), ord("ÿ") + 1))
  )
  table, extra = {}, 0
  for b in range(256):
    if b in printable:
      table[b] = chr(b)
    else:
      table[b] = chr(256 + extra)
      extra += 1
  return [table[b] for b in range(256)]


# Each merge joins two existing tokens; "</w>" marks a word end, as in CLIP's merges.txt.
_MERGES = [
    "t h", "th e</w>", "a n", "an d</w>", "i n", "in g</w>", "m a", "ma n</w>",
    "e r</w>", "o g</w>", "w a", "wa l", "wal k", "walk ing</w>", "r e", "re d</w>",
]


def write_clip_vocab(folder) -> int:
  """A small byte-level CLIP BPE vocabulary (vocab.json + merges.txt) in `folder`; returns its
  size (<|endoftext|> is the last id)."""
  chars = _byte_chars()
  tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in _MERGES]
  tokens += ["<|startoftext|>", "<|endoftext|>"]
  with open(os.path.join(folder, "vocab.json"), "w") as f:
    json.dump({t: i for i, t in enumerate(tokens)}, f)
  with open(os.path.join(folder, "merges.txt"), "w") as f:
    f.write("#version: 0.2\n" + "\n".join(_MERGES) + "\n")
  return len(tokens)


def save_tiny_clip(folder) -> int:
  """A random tiny `CLIPModel` (32x32 images, one block per tower, projection 24) with the CLIP
  BPE vocabulary of `write_clip_vocab`, written with save_pretrained; returns the vocab size."""
  import torch
  import transformers

  os.makedirs(folder, exist_ok=True)
  vocab = write_clip_vocab(folder)
  torch.manual_seed(0)
  transformers.CLIPModel(transformers.CLIPConfig(
      text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                       num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=77,
                       bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1),
      vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, image_size=32, patch_size=16),
      projection_dim=24)).save_pretrained(folder)
  return vocab
