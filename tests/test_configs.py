"""configs/retext.py: presets, short overrides and the protocol table it trains on."""

import pytest

from configs import retext
from retext_jax import protocols


@pytest.mark.parametrize("name", retext.TRAINING_PROTOCOLS)
def test_protocol_sets_sources_and_targets(name):
  c = retext.get_config(f"paper,protocol={name}")
  p = protocols.get(name)
  multicam = {k: v for k, v in c.data.sources.items() if v["part"] == "multicam"}
  assert sorted(multicam) == sorted(p.sources)
  assert all(dict(v["options"]) == ({"combineall": True} if p.combineall else {})
             for v in multicam.values())
  assert c.data.sources["synthpedes"]["part"] == "singlecam"
  assert sorted(c.data.targets) == sorted(t.reader for t in p.targets)
  assert not set(p.sources) & {t.reader for t in p.targets}  # targets stay unseen


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
