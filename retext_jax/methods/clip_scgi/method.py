"""CLIP-SCGI as a method: the CLIP-ReID-style losses plus caption-guided inversion and fusion.

  L = lambda_id L_id + lambda_triplet L_tri + lambda_itc L_itc + lambda_cff L_cff

* L_id: ID cross-entropy with label smoothing on the image feature after the BNNeck;
  L_tri: batch-hard triplet on the feature before it (`retext_jax.losses.reid_loss`).
* L_itc (with CGI): CLIP's symmetric contrastive loss between each image's projected embedding
  and the embedding of its own composed prompt "a photo of a S* person", at CLIP's learned
  temperature, clamped at 1/100 as CLIP does (`losses.itc`). The paper's exact contrastive
  form is not public.
* L_cff (with CFF): ID cross-entropy with label smoothing on CFF's BNNeck output.

Captions (one per image per step, drawn from the image's captions) are read only by CGI; the
Re-ID feature at test time is the image tower's class token through the BNNeck, so inference
costs what CLIP-ReID's does. `model.cgi=False, model.cff=False` is the CLIP-ReID-style
baseline, which reads no caption. Choices the paper leaves open (CGI queries and heads, CFF
depth, loss weights, the retrieved feature) are config keys (`configs/clip_scgi.py`).
"""

from __future__ import annotations

import jax.numpy as jnp

from retext_jax import errors, losses, tokenizers
from retext_jax.linalg import l2_normalize
from retext_jax.methods import base
from retext_jax.methods.clip_scgi.model import CLIPSCGI, CLIPSCGIConfig
from retext_jax.models import clip, pretrained

PLACEHOLDER = "x"  # the word standing for S* in the prompt template while it is tokenised


def _placeholder_position(tokenizer: tokenizers.TextTokenizer, template: str, max_len: int
                          ) -> tuple[list[int], list[int], int]:
  if template.split().count("X") != 1:
    raise errors.ConfigError(f"config.model.prompt={template!r} must contain the word X once")
  ids, mask = tokenizer.encode([template.replace("X", PLACEHOLDER)], max_len)
  word = tokenizer.encode([PLACEHOLDER], 8)[0][0, 1]  # after the start token
  where = [i for i, t in enumerate(ids[0]) if t == word]
  if len(where) != 1:
    raise errors.ConfigError(f"config.model.prompt={template!r}: the tokenizer splits X")
  return ids[0].tolist(), mask[0].tolist(), where[0]


def clip_config(config, vocab_size: int, eos_token_id: int, num_cameras: int) -> clip.CLIPConfig:
  """A CLIP built from `config.model` (random init: the synthetic presets)."""
  m = config.model
  vision = clip.CLIPVisionConfig(
      hidden_size=m.width, num_layers=m.depth, num_heads=m.heads, mlp_dim=4 * m.width,
      patch_size=m.patch, stride=m.stride, image_size=tuple(config.input.image_size),
      drop_path_rate=m.drop_path, num_cameras=num_cameras)
  text = clip.CLIPTextConfig(
      vocab_size=vocab_size, hidden_size=m.text_width, num_layers=m.text_depth,
      num_heads=m.text_heads, mlp_dim=4 * m.text_width, max_len=config.input.max_text_len,
      eos_token_id=eos_token_id)
  return clip.CLIPConfig(vision=vision, text=text, projection_dim=m.projection_dim)


class CLIPSCGIMethod(base.Method):
  name = "clip_scgi"
  model_config_cls = CLIPSCGIConfig
  backbone_keys = ("vision", "text")

  @classmethod
  def fit_to_data(cls, config, data: base.DataInfo) -> tuple[dict, str]:
    """Without any caption on the training images, caption-guided inversion is switched off
    (CFF keeps the plain prompt): the CLIP-ReID-style model with CFF."""
    if not config.model.cgi or data.multicam_captioned > 0:
      return {}, ""
    return ({"model.cgi": False},
            "no training image has a caption (tools.caption writes them): CGI is off")

  @classmethod
  def create(cls, config, data: base.DataInfo) -> base.Init:
    m = config.model
    cams = data.num_cameras if m.camera_embedding else 0
    if config.init.clip:  # a converted (or HF) CLIP folder: its towers and its tokenizer
      params, ccfg, tokenizer = pretrained.clip_model(config.init.clip, m, cams)
      loaded = {"vision": params["vision"], "text": params["text"],
                "temperature": {"logit_scale": params["logit_scale"]}}
    else:
      tokenizer = tokenizers.load_tokenizer(pretrained.minilm_path() if config.init.tokenizer ==
                                            "minilm" else config.init.tokenizer, "bert")
      eos = tokenizer.encode([""], 4)[0][0, 1]  # BERT: [CLS] [SEP]; CLIP pools on [SEP]
      ccfg = clip_config(config, tokenizer.vocab_size, int(eos), cams)
      loaded = {}
    ids, mask, where = _placeholder_position(tokenizer, m.prompt, config.input.max_text_len)
    mcfg = CLIPSCGIConfig(
        clip=ccfg, num_classes=data.num_classes, prompt_ids=tuple(ids), prompt_mask=tuple(mask),
        placeholder=where, cgi=bool(m.cgi), cff=bool(m.cff), num_queries=m.num_queries,
        cgi_heads=m.cgi_heads, cff_blocks=m.cff_blocks, cff_heads=m.cff_heads)
    if not mcfg.uses_text:
      loaded.pop("text", None)
    if not mcfg.cgi:
      loaded.pop("temperature", None)
    return base.Init(cls(config, mcfg), loaded, tokenizer if mcfg.uses_text else None)

  def make_module(self) -> CLIPSCGI:
    return CLIPSCGI(self.model_config, dtype=self.dtype)

  def init_inputs(self) -> tuple:
    h, w = self.config.input.image_size
    tokens = jnp.asarray([self.model_config.prompt_ids] * 2, jnp.int32)
    return (jnp.zeros((2, h, w, 3), jnp.float32), jnp.zeros((2,), jnp.int32), tokens,
            jnp.ones_like(tokens))

  @property
  def streams(self) -> tuple[str, ...]:
    return (base.MULTICAM_TEXT,) if self.model_config.cgi else (base.MULTICAM,)

  def loss_fn(self, params, state, batch, rng):
    lc, c = self.config.loss, self.model_config
    out, mutated = self.model.apply(
        {"params": params, "batch_stats": state["batch_stats"]}, batch["multicam/image"],
        batch.get("multicam/camid"), batch.get("multicam/tokens"),
        batch.get("multicam/token_mask"), train=True, mutable=["batch_stats"],
        rngs={"dropout": rng})
    pid = batch["multicam/pid"]
    reid = losses.reid_loss(out["logits"], out["feat"], pid, label_smoothing=lc.label_smoothing,
                            margin=lc.triplet_margin, soft_margin=lc.soft_margin)
    metrics = {"loss/id": reid["id"], "loss/triplet": reid["triplet"]}
    total = lc.lambda_id * reid["id"] + lc.lambda_triplet * reid["triplet"]
    if c.cgi:
      temperature = 1.0 / jnp.minimum(jnp.exp(out["logit_scale"]), 100.0)  # CLIP's clamp
      metrics["loss/itc"] = losses.itc(out["image_embedding"], out["prompt_embedding"],
                                       temperature)
      total = total + lc.lambda_itc * metrics["loss/itc"]
    if c.cff:
      metrics["loss/cff_id"] = losses.cross_entropy_label_smoothing(out["cff_logits"], pid,
                                                                    lc.label_smoothing)
      total = total + lc.lambda_cff * metrics["loss/cff_id"]
    return total, (metrics, {"batch_stats": mutated["batch_stats"]})

  def predict_fns(self) -> dict:
    model, neck = self.model, self.config.eval.neck
    fns = {
        base.REID: lambda v, x: l2_normalize(model.apply(v, x, neck, method=CLIPSCGI.features)),
        base.IMAGE_EMBED: lambda v, x: l2_normalize(
            model.apply(v, x, method=CLIPSCGI.image)[0]["embedding"].astype(jnp.float32)),
    }
    if self.model_config.uses_text:
      fns[base.TEXT_EMBED] = lambda v, t, m: l2_normalize(
          model.apply(v, t, m, method=CLIPSCGI.embed_text)["embedding"].astype(jnp.float32))
    return fns
