"""Optimizer groups: which parameters train at which learning rate, checked on real updates."""

import jax.numpy as jnp
import numpy as np
import pytest

from retext_jax import errors, optim

PARAMS = {
    "image_encoder": {"block": {"bias": jnp.ones(3)}},
    "text_encoder": {"word_embeddings": {"embedding": jnp.ones((4, 3))},
                     "layer": {"bias": jnp.ones(3)}},
    "classifier": {"bias": jnp.ones(3)},
}
CFG = dict(name="adamw", lr=1e-2, head_lr_mult=10.0, weight_decay=0.0, warmup_steps=0,
           end_factor=1.0)


def test_groups_freeze_then_lr_mults_then_backbone_or_head():
  groups = optim.param_groups(PARAMS, ("image_encoder", "text_encoder"),
                              freeze="word_embeddings", lr_mults={"text_encoder": 0.1})
  assert groups == {
      "image_encoder": {"block": {"bias": optim.BACKBONE}},
      "text_encoder": {"word_embeddings": {"embedding": optim.FROZEN},
                       "layer": {"bias": "text_encoder"}},
      "classifier": {"bias": optim.HEAD},
  }


def test_first_adam_step_moves_each_group_by_its_learning_rate():
  # Adam's first bias-corrected step is lr * g / (|g| + eps): -lr for a positive gradient.
  tx, scheds = optim.make_optimizer(
      dict(CFG, freeze="word_embeddings", lr_mults={"text_encoder": 0.1}), 100,
      ("image_encoder", "text_encoder"))
  updates, _ = tx.update(PARAMS, tx.init(PARAMS), PARAMS)  # gradient = the (positive) params
  np.testing.assert_allclose(updates["image_encoder"]["block"]["bias"], -1e-2, rtol=1e-5)
  np.testing.assert_allclose(updates["text_encoder"]["layer"]["bias"], -1e-3, rtol=1e-5)
  np.testing.assert_allclose(updates["classifier"]["bias"], -1e-1, rtol=1e-5)
  np.testing.assert_array_equal(updates["text_encoder"]["word_embeddings"]["embedding"], 0.0)
  assert {g: float(s(0)) for g, s in scheds.items()} == pytest.approx(
      {optim.BACKBONE: 1e-2, optim.HEAD: 1e-1, "text_encoder": 1e-3})


def test_lr_mults_name_what_they_do_not_match(caplog):
  # A prefix matching nothing (a typo, or a tower another key switched off) is logged, not fatal.
  groups = optim.param_groups(PARAMS, (), lr_mults={"txt_encoder": 0.1})
  assert "txt_encoder" not in str(groups) and "['txt_encoder'] (ignored)" in caplog.text
  with pytest.raises(errors.ConfigError, match="clash"):
    optim.make_optimizer(dict(CFG, lr_mults={"head": 2.0}), 10, ())
