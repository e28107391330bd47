"""LCR²S (Yan et al., ACM MM 2023) as a method: a teacher that fuses each sample with a support
set of its identity's other samples, distilled into a single-input student.

One command runs both stages (`stages`): the teacher trains in `<workdir>/teacher`, then the
student trains in `<workdir>` with the finished teacher frozen beside it. Each stage resumes
from its own checkpoints; a stage whose results are written is not run again. Only the
student is saved in `<workdir>` (the teacher is read from `<workdir>/teacher`, never copied
into the student's checkpoints), so tools pointed at the workdir use the student.

Batches: P identities x K image-caption pairs (the `multicam_text` stream). A sample's support
set is the other samples of its identity in the batch whose image is a different record: at
most K - 1 images and their K - 1 captions (`model.support_sets`). An identity with fewer
than K images repeats some (sampled with replacement); the copies are not support. An identity
with a single image has an empty support set and its enriched feature is its own (the fusion
then attends only to the sample).

  teacher: L = L_match(enriched image, enriched text)
  student: L = L_match(image, text)
               + lambda_feat (MSE(image, teacher image) + MSE(text, teacher text))
               + lambda_rel || S(image, text) - S(teacher image, teacher text) ||_F

L_match is the IRRA-style baseline's SDM + ID (+ ITC) (`retext_jax.methods.irra`). MSE is on
L2-normalised features; S is the batch's image-text cosine-similarity matrix; both against the
teacher's enriched features of the same batch with its support sets (`retext_jax.losses`). The
student starts from the same initialisation as the teacher (same seed, same pretrained towers),
not from the teacher's weights.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections

from retext_jax import checkpointing, errors, losses
from retext_jax.linalg import l2_normalize
from retext_jax.methods import base
from retext_jax.methods.irra.method import IRRAMethod
from retext_jax.methods.lcr2s.model import LCR2S, LCR2SConfig, support_sets

TEACHER_DIR = "teacher"  # the teacher's workdir, under the run's workdir
BOTH = "teacher+student"


class LCR2SMethod(IRRAMethod):
  name = "lcr2s"
  model_config_cls = LCR2SConfig

  _teacher_params = None  # set by `load_teacher` (training a distilled student only)

  @classmethod
  def model_fields(cls, config) -> dict:
    m = config.model
    if m.role == BOTH:
      raise errors.ConfigError(f"config.model.role={BOTH!r} is run stage by stage "
                               "(retext_jax.train): build the method with 'teacher' or 'student'")
    return {"role": m.role, "fusion_heads": m.fusion_heads, "fusion_layers": m.fusion_layers,
            "fusion_mlp_ratio": m.fusion_mlp_ratio}

  @classmethod
  def create(cls, config, data: base.DataInfo) -> base.Init:
    init = super().create(config, data)
    if init.method.distills:
      init.method.load_teacher(config.init.teacher)
    return init

  @classmethod
  def stages(cls, config, workdir: str) -> list[tuple[str, ml_collections.ConfigDict]]:
    """`model.role="teacher+student"`: the teacher in <workdir>/teacher, then the student in
    <workdir> distilled from it. Otherwise the one stage `model.role` names."""
    if config.model.role != BOTH:
      return [(workdir, config)]
    teacher_dir = os.path.join(workdir, TEACHER_DIR)
    teacher, student = (ml_collections.ConfigDict(config.to_dict()) for _ in range(2))
    teacher.name = f"{config.name}_teacher"
    teacher.model.role = "teacher"
    teacher.total_steps = config.teacher_steps
    student.model.role = "student"
    student.init.teacher = teacher_dir
    return [(teacher_dir, teacher), (workdir, student)]

  def make_module(self) -> LCR2S:
    return LCR2S(self.model_config, dtype=self.dtype)

  @property
  def distills(self) -> bool:
    lc = self.config.loss
    return self.model_config.role == "student" and (lc.lambda_feat > 0 or lc.lambda_rel > 0)

  # -------------------------------------------------------------------------- the teacher

  def load_teacher(self, teacher_dir: str) -> None:
    """Reads the frozen teacher (params and module) from a finished teacher workdir."""
    if not teacher_dir:
      raise errors.ConfigError("the LCR²S student distils from a teacher: set config.init.teacher "
                               "to a teacher run's workdir, or loss.lambda_feat and "
                               "loss.lambda_rel to 0")
    variables, meta = checkpointing.restore_variables(teacher_dir, keys=("params",))
    model = meta.get("model") or {}
    if meta.get("method") != self.name or model.get("role") != "teacher":
      raise errors.ConfigError(f"config.init.teacher={teacher_dir} holds a "
                               f"{meta.get('method')} {model.get('role', '')} model, not an "
                               "LCR²S teacher")
    teacher_cfg = LCR2SConfig.from_dict(model)
    if teacher_cfg.towers() != self.model_config.towers():
      raise errors.ConfigError(f"the teacher in {teacher_dir} has other towers or identities than "
                               "this student's config (config.model, config.init, data)")
    self.teacher = LCR2S(teacher_cfg, dtype=self.dtype)
    self._teacher_params = variables["params"]

  def frozen_state(self) -> dict:
    return {"teacher": self._teacher_params} if self.distills else {}

  # ------------------------------------------------------------------------------ training

  def loss_fn(self, params, state, batch, rng):
    pid = batch["multicam/pid"]
    support = support_sets(pid, batch["multicam/record"])
    lc, metrics = self.config.loss, {}
    if self.model_config.role == "teacher":
      img, txt = self.model.apply(
          {"params": params}, batch["multicam/image"], batch["multicam/tokens"],
          batch["multicam/token_mask"], support, train=True, method=LCR2S.enriched,
          rngs={"dropout": rng})
      metrics["support_size"] = jnp.mean(jnp.sum(support, axis=1).astype(jnp.float32))
    else:
      img, txt = self.embed(params, batch, rng)
    total, match = self.matching_losses(params, img, txt, pid)
    metrics.update(match)
    if self.distills:
      t_img, t_txt = self.teacher.apply(
          {"params": state["teacher"]}, batch["multicam/image"], batch["multicam/tokens"],
          batch["multicam/token_mask"], support, method=LCR2S.enriched)
      t_img, t_txt = jax.lax.stop_gradient((t_img, t_txt))
      metrics["loss/feat"] = (losses.feature_distillation(img, t_img)
                              + losses.feature_distillation(txt, t_txt))
      metrics["loss/rel"] = losses.relation_distillation(img, txt, t_img, t_txt)
      total = total + lc.lambda_feat * metrics["loss/feat"] + lc.lambda_rel * metrics["loss/rel"]
    return total, (metrics, {})

  # ------------------------------------------------------------------------------ test time

  def predict_fns(self) -> dict:
    if self.model_config.role == "student":
      return super().predict_fns()
    model = self.model

    def image(v, x):
      emb = model.apply(v, x, method=LCR2S.embed_image)
      return l2_normalize(model.apply(v, emb, "image", method=LCR2S.alone))

    def text(v, tokens, mask):
      emb = model.apply(v, tokens, mask, method=LCR2S.embed_text)
      return l2_normalize(model.apply(v, emb, "text", method=LCR2S.alone))

    return {base.IMAGE_EMBED: image, base.TEXT_EMBED: text, base.REID: image}

