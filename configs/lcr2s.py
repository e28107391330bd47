r"""LCR²S: a teacher that fuses every image (caption) with a support set of its identity's other
images (captions) through multi-head attentional fusion, trained on the enriched features, then
frozen and distilled into a single-input student, the only model used at test time. One
command runs both stages: the teacher in <workdir>/teacher, then the student in <workdir>
(each resumes where it was killed). The losses and every choice the paper leaves open:
retext_jax/methods/lcr2s/method.py.

Towers: the paper uses a ResNet-50 and TextCNN + BERT. We use the IRRA-style baseline's towers
(`configs/irra.py`): CLIP ViT-B/16 + CLIP text in the `paper` preset, so LCR²S and the
baseline it is compared with differ only in the support-set teacher and the distillation;
`towers=vit_bert` gives a ViT + BERT, the closer match to the paper's ImageNet image tower +
BERT text tower.

Choices the paper does not fix (config keys): 4 fusion heads (8 with CLIP), one fusion block;
support set = the other K - 1 samples of the identity in the batch (K = input.multicam_k);
the teacher trains as long as the student; lambda_feat = 1 (MSE of normalised features, summed
over the two modalities), lambda_rel = 0.1 (Frobenius norm of a B x B similarity difference
grows with B; 0.1 keeps it on the matching losses' scale at B = 48-64).

Presets (`--config=configs/lcr2s.py:PRESET[,key=value,...]`):

* `demo` - the IRRA demo's data and towers, both stages on a 2-core CPU:

    python -m retext_jax.main --config=configs/lcr2s.py:demo --workdir=workdirs/lcr2s

  Measured on 2 CPU cores: 8 min 12 s for both stages (180 steps each); the student's
  text-to-image R1 41.2 %, mAP 44.9 % (untrained: 5.9 %, 10.5 %); the teacher without a
  support set R1 25.0 %, mAP 32.3 %. Over 3 seeds: the README's LCR²S table.

* `tiny` - a few steps of each stage on the tiny synthetic benchmark, for tests.
* default (`paper`) - CUHK-PEDES (`protocol=t2i_icfgpedes` / `t2i_rstpreid` for the others),
  the IRRA recipe per stage:

    python -m retext_jax.main --config=configs/lcr2s.py --workdir=workdirs/lcr2s_cuhk \
      --config.data.root=/data/text_reid --config.init.clip=~/ckpt/clip_b16

Overrides: those of configs/irra.py, plus role (teacher+student | teacher | student),
teacher_steps, lambda_feat, lambda_rel, teacher (a teacher workdir, for role=student).
"""

from __future__ import annotations

import functools

import ml_collections

from configs import common, irra
from retext_jax import protocols

SHORT = {**irra.SHORT, "role": "model.role", "teacher_steps": "teacher_steps",
         "lambda_feat": "loss.lambda_feat", "lambda_rel": "loss.lambda_rel",
         "teacher": "init.teacher"}


def base_config() -> ml_collections.ConfigDict:
  c = irra.base_config("lcr2s", "lcr2s")
  c.teacher_steps = c.total_steps  # stage 1; total_steps is stage 2 (the student)
  c.model.update(role="teacher+student", fusion_heads=8, fusion_layers=1, fusion_mlp_ratio=2)
  c.init.teacher = ""  # a teacher workdir (set by the two-stage run; for role=student)
  c.loss.update(lambda_feat=1.0, lambda_rel=0.1)
  return c


def demo_config() -> ml_collections.ConfigDict:
  c = irra.demo_config(base_config())
  c.teacher_steps = c.total_steps
  c.model.fusion_heads = 4
  return c


def tiny_config() -> ml_collections.ConfigDict:
  c = irra.tiny_config(base_config())
  c.teacher_steps = c.total_steps
  c.model.fusion_heads = 2
  return c


PRESETS = {"paper": base_config, "demo": demo_config, "tiny": tiny_config}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg` = "[preset][,key=value...]" with preset in {paper (default), demo, tiny}."""
  return common.parse(arg, "configs/lcr2s.py", PRESETS, SHORT, irra.text_protocol_data,
                      data=functools.partial(common.own_data, task=protocols.TEXT))
