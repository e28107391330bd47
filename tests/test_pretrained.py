"""`config.init.*`: pretrained weights named in a config reach the model they should."""

import numpy as np
import pytest
from encoder_utils import save_tiny_vit

from retext_jax import errors
from retext_jax.models import pretrained, vit

MODEL_CFG = dict(vit="tiny", depth=0, patch=16, stride=16, drop_path=0.1, camera_embedding=True)


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory):
  pytest.importorskip("torch", reason="builds the reference HF ViT (test extra)")
  folder = tmp_path_factory.mktemp("hf_vit")
  save_tiny_vit(folder, pooler=False)
  return str(folder)


def test_converted_vit_at_another_size_equals_direct_import(hf_vit, tmp_path):
  # Converted at 224x224, loaded for 256x128: the position embeddings are resized from the
  # stored 14x14 grid to 16x8, exactly as importing the HF folder at 256x128 does.
  pretrained.convert(hf_vit, "vit", str(tmp_path / "conv"))
  cfg, params = pretrained.image_encoder(MODEL_CFG, (256, 128), str(tmp_path / "conv"),
                                         num_cameras=6)
  direct, direct_cfg = vit.convert_checkpoint(hf_vit, image_size=(256, 128), stride=16)
  assert cfg.grid == direct_cfg.grid == (16, 8)
  np.testing.assert_allclose(params["pos_embed"], direct["pos_embed"], atol=1e-6)
  np.testing.assert_array_equal(params["block_0"]["attn"]["query"]["kernel"],
                                direct["block_0"]["attn"]["query"]["kernel"])
  # Training options are the config's, not the checkpoint's.
  assert cfg.num_cameras == 6 and cfg.drop_path_rate == 0.1 and cfg.hidden_size == 32


def test_merge_lists_loaded_kept_and_ignored_and_refuses_shape_mismatches():
  init = {"enc": {"w": np.zeros((2, 3)), "b": np.zeros(3)}, "head": {"w": np.ones((3, 4))}}
  loaded = {"enc": {"w": np.full((2, 3), 7.0), "pooler": np.ones(5)}}
  params, report = pretrained.merge(init, loaded)
  assert report == {"loaded": ["enc/w"], "kept": ["enc/b", "head/w"], "ignored": ["enc/pooler"]}
  np.testing.assert_array_equal(params["enc"]["w"], loaded["enc"]["w"])
  np.testing.assert_array_equal(params["enc"]["b"], init["enc"]["b"])
  assert params["head"]["w"] is init["head"]["w"] and set(params["enc"]) == {"w", "b"}
  with pytest.raises(errors.ConfigError, match=r"enc/w: pretrained \(3, 2\), model \(2, 3\)"):
    pretrained.merge(init, {"enc": {"w": np.zeros((3, 2)), "b": np.zeros(3)}})


def test_missing_pretrained_path_names_it():
  with pytest.raises(FileNotFoundError, match="/no/such/vit"):
    pretrained.image_encoder(MODEL_CFG, (256, 128), "/no/such/vit")
  with pytest.raises(FileNotFoundError, match="/no/such/bert"):
    pretrained.text_encoder("/no/such/bert")


def test_conv_stem_with_pretrained_weights_is_refused(hf_vit):
  with pytest.raises(errors.ConfigError, match="stem='conv' is for image encoders trained"):
    pretrained.image_encoder({**MODEL_CFG, "stem": "conv"}, (256, 128), hf_vit)
