"""configs/retext.py, configs/bot.py and configs/lcr2s.py: presets, short overrides, the
protocol table they train on, and one-line user errors for typos."""

import pytest

from configs import bot, common, retext
from retext_jax import errors, protocols


@pytest.mark.parametrize("name", common.TRAINING_PROTOCOLS)
def test_protocol_sets_sources_and_targets(name):
  c = retext.get_config(f"paper,protocol={name}")
  p = protocols.get(name)
  multicam = {k: v for k, v in c.data.sources.items() if v["part"] == "multicam"}
  assert sorted(multicam) == sorted(p.sources)
  assert all(dict(v["options"]) == ({"combineall": True} if p.combineall else {})
             for v in multicam.values())
  assert c.data.sources["synthpedes"]["part"] == "singlecam"
  assert sorted(c.data.targets) == sorted(t.reader for t in p.targets)
  if not p.supervised:  # domain generalisation: the targets stay unseen
    assert not set(p.sources) & {t.reader for t in p.targets}
  else:  # supervised: train split of the dataset whose query/gallery is the target
    assert p.sources == tuple(t.reader for t in p.targets) and not p.combineall


def test_leave_one_out_and_rejected_protocols():
  c = retext.get_config("paper,protocol=p3_m")
  assert "market1501" not in c.data.sources and list(c.data.targets) == ["market1501"]
  for bad in ("t2i_cuhkpedes", "synthetic", "nope"):
    with pytest.raises(ValueError, match="unknown protocol"):
      retext.get_config(f"paper,protocol={bad}")


def test_short_overrides_and_unknown_keys():
  c = retext.get_config("demo,steps=7,lr=0.01,lambda_rec=0")
  assert (c.total_steps, c.optim.lr, c.loss.lambda_rec) == (7, 0.01, 0.0)
  with pytest.raises(KeyError, match="unknown config override"):
    retext.get_config("demo,stepz=3")


@pytest.mark.parametrize("module", [retext, bot])
def test_config_mistakes_are_user_errors(module):
  for arg, match in [("demoo", "unknown preset 'demoo'"), ("demo,steps=abc", "steps='abc'"),
                     ("demo,stepz=3", "stepz"), ("demo,steps", "not key=value")]:
    with pytest.raises(errors.UserError, match=match):
      module.get_config(arg)


def test_bot_presets_share_the_retext_demo_data_without_captions():
  b, r = bot.get_config("demo"), retext.get_config("demo")
  assert b.method == "bot" and r.method == "retext"
  assert list(b.data.sources) == ["synthetic_source"]
  assert b.data.sources["synthetic_source"] == r.data.sources["synthetic_source"]
  assert b.data.targets["synthetic_target"] == r.data.targets["synthetic_target"]
  assert list(b.evals) == ["reid"] and sorted(r.evals) == ["in_domain", "reid", "t2i"]
  assert b.model.stem == r.model.stem == "conv"  # the same from-scratch recipe
  assert b.input.camera_jitter == r.input.camera_jitter > 0
  assert b.model.vit == r.model.vit == "tiny"
  assert (b.input.image_size, b.total_steps, b.optim.lr) == (r.input.image_size, 400, 5e-4)
  assert "lambda_iam" not in b.loss and "text" not in b.init
  c = bot.get_config("paper,protocol=m_to_ms,stride=12,camera=1")
  assert list(c.data.sources) == ["market1501"] and list(c.data.targets) == ["msmt17"]
  assert c.model.stride == 12 and c.model.camera_embedding is True


@pytest.mark.parametrize("name", common.TEXT_PROTOCOLS)
def test_text_protocols_train_and_test_on_the_same_folder(name):
  from configs import lcr2s

  c = lcr2s.get_config(f"paper,protocol={name}")
  target = protocols.get(name).targets[0]
  assert [(s["reader"], s["root"], s["part"]) for s in c.data.sources.values()] == [
      (target.reader, target.root, "multicam")]
  assert c.data.targets[target.reader].to_dict() == common.target(target.reader, target.root)
  with pytest.raises(errors.ConfigError, match="t2i_cuhkpedes"):
    lcr2s.get_config("paper,protocol=p2_m")
