"""Weight import framework: readers, key tables, transforms, and the Google ViT .npz layout."""

import json

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from retext_jax import errors
from retext_jax.models import vit
from retext_jax.models import weights as W

torch = pytest.importorskip(
  "torch", reason="torch.nn.functional.interpolate is the resize reference"
)
from encoder_utils import max_abs_diff, save_tiny_vit, torch_out  # noqa: E402


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
@pytest.mark.parametrize("src,dst", [((14, 14), (16, 8)), ((7, 5), (21, 10)), ((24, 12), (5, 9))])
def test_resize_grid_matches_torch(method, src, dst):
  x = np.random.default_rng(0).normal(size=(*src, 6)).astype(np.float32)
  ref = (
    torch.nn.functional.interpolate(
      torch.from_numpy(x).permute(2, 0, 1)[None], size=dst, mode=method, align_corners=False
    )[0]
    .permute(1, 2, 0)
    .numpy()
  )
  assert max_abs_diff(W.resize_grid(x, dst, method), ref) <= 1e-5


def _table_and_target():
  rules = [
    W.Rule("block_{i}/dense/kernel", "layers.{i}.fc.weight", W.linear),
    W.Rule("block_{i}/dense/bias", "layers.{i}.fc.bias"),
    W.Rule("head/kernel", ("head.weight", "classifier.weight"), W.linear),
  ]
  target = {
    "block_0": {"dense": {"kernel": np.zeros((3, 2), np.float32), "bias": np.zeros(2, np.float32)}},
    "block_1": {"dense": {"kernel": np.zeros((3, 2), np.float32), "bias": np.zeros(2, np.float32)}},
    "head": {"kernel": np.full((2, 4), 7.0, np.float32)},
  }
  rng = np.random.default_rng(0)
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
  tensors = {
    "layers.0.fc.weight": normal(2, 3),
    "layers.0.fc.bias": normal(2),
    "layers.1.fc.weight": normal(2, 3),
    "layers.1.fc.bias": normal(2),
    "classifier.weight": normal(4, 2),
  }
  return rules, target, tensors


def test_key_table_builds_params_with_placeholders_and_alternatives():
  rules, target, tensors = _table_and_target()
  out = W.apply_key_table(rules, tensors, target)
  np.testing.assert_array_equal(out["block_1"]["dense"]["kernel"], tensors["layers.1.fc.weight"].T)
  np.testing.assert_array_equal(out["head"]["kernel"], tensors["classifier.weight"].T)
  assert out["block_0"]["dense"]["bias"].dtype == np.float32  # cast to the target dtype
  prefixed = {"model." + k: v for k, v in tensors.items()}
  assert W.detect_prefix(prefixed, "layers.0.fc.bias", ("", "bert.", "model.")) == "model."
  again = W.apply_key_table(rules, prefixed, target, prefix="model.")
  np.testing.assert_array_equal(again["head"]["kernel"], out["head"]["kernel"])


def test_key_table_names_every_missing_unexpected_and_misshapen_key():
  rules, target, tensors = _table_and_target()
  del tensors["layers.1.fc.bias"]
  tensors["layers.0.fc.weight"] = np.zeros((5, 3))
  tensors["extra.thing"] = np.zeros(1)
  tensors["buffer.ids"] = np.zeros(1)
  with pytest.raises(W.WeightImportError) as info:
    W.apply_key_table(
      rules, tensors, target, ignore=[r"buffer\..*"], table_name="toy", source_name="/ckpt"
    )
  err = info.value
  assert err.missing == ["layers.1.fc.bias (for block_1/dense/bias)"]
  assert err.unexpected == ["extra.thing"]
  assert (
    len(err.wrong_shape) == 1 and "layers.0.fc.weight -> block_0/dense/kernel" in err.wrong_shape[0]
  )
  assert "(3, 5) after linear, expected (3, 2)" in err.wrong_shape[0]
  assert "/ckpt" in str(err) and "toy" in str(err)

  # Allowing a head to be missing keeps its initial value; leftovers can be allowed too.
  rules, target, tensors = _table_and_target()
  del tensors["classifier.weight"]
  tensors["cls.predictions.bias"] = np.zeros(3)
  out = W.apply_key_table(
    rules, tensors, target, allow_missing=[r"head/.*"], allow_unexpected=[r"cls\..*"]
  )
  np.testing.assert_array_equal(out["head"]["kernel"], np.full((2, 4), 7.0))
  with pytest.raises(W.WeightImportError, match="head.weight"):
    W.apply_key_table(rules, tensors, target, allow_unexpected=[r"cls\..*"])
  with pytest.raises(W.WeightImportError, match="no rule"):
    W.apply_key_table(rules[:2], tensors, target, allow_missing=[r"head/.*"])


def test_sharded_safetensors_and_file_errors(tmp_path):
  a, b = np.arange(6.0, dtype=np.float32).reshape(2, 3), np.ones(4, np.float32)
  save_file({"a": a}, str(tmp_path / "model-00001-of-00002.safetensors"))
  save_file({"b": b}, str(tmp_path / "model-00002-of-00002.safetensors"))
  index = {
    "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
  }
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "toy"}))
  tensors, config = W.load_safetensors_dir(tmp_path)
  np.testing.assert_array_equal(tensors["a"], a)
  np.testing.assert_array_equal(tensors["b"], b)
  assert config == {"model_type": "toy"}

  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(W.WeightImportError, match=f"no weights in {empty}.*model.safetensors"):
    W.load_safetensors_dir(empty)
  (empty / "pytorch_model.bin").write_bytes(b"PK")
  with pytest.raises(W.WeightImportError, match="pytorch_model.bin"):
    W.load_safetensors_dir(empty)
  (tmp_path / "config.json").unlink()
  with pytest.raises(W.WeightImportError, match="no config.json"):
    W.load_safetensors_dir(tmp_path)
  with pytest.raises(W.WeightImportError, match="does not exist"):
    W.load_safetensors_dir(tmp_path / "nope")
  np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
  with pytest.raises(W.WeightImportError, match="cannot read") as e:
    W.load_npz(tmp_path / "obj.npz")
  assert isinstance(e.value, errors.UserError) and isinstance(e.value, ValueError)


def _hf_to_vit_jax_npz(t: dict, heads: int) -> dict:
  """Rewrites HF ViT weights in the vit_jax (AugReg) npz layout, independently of our key table."""
  d = t["embeddings.cls_token"].shape[-1]
  out = {
    "cls": t["embeddings.cls_token"],
    "embedding/kernel": t["embeddings.patch_embeddings.projection.weight"].transpose(2, 3, 1, 0),
    "embedding/bias": t["embeddings.patch_embeddings.projection.bias"],
    "Transformer/posembed_input/pos_embedding": t["embeddings.position_embeddings"],
    "Transformer/encoder_norm/scale": t["layernorm.weight"],
    "Transformer/encoder_norm/bias": t["layernorm.bias"],
    "pre_logits/kernel": t["pooler.dense.weight"].T,
    "pre_logits/bias": t["pooler.dense.bias"],
    "head/kernel": np.zeros((d, 10), np.float32),
    "head/bias": np.zeros(10, np.float32),
  }
  i = 0
  while f"encoder.layer.{i}.layernorm_before.weight" in t:
    hf, blk = f"encoder.layer.{i}.", f"Transformer/encoderblock_{i}/"
    att = blk + "MultiHeadDotProductAttention_1/"
    out[blk + "LayerNorm_0/scale"] = t[hf + "layernorm_before.weight"]
    out[blk + "LayerNorm_0/bias"] = t[hf + "layernorm_before.bias"]
    out[blk + "LayerNorm_2/scale"] = t[hf + "layernorm_after.weight"]
    out[blk + "LayerNorm_2/bias"] = t[hf + "layernorm_after.bias"]
    for name in ("query", "key", "value"):
      w = t[hf + f"attention.attention.{name}.weight"]  # [out = H*Dh, in = D]
      out[att + f"{name}/kernel"] = w.T.reshape(d, heads, d // heads)
      out[att + f"{name}/bias"] = t[hf + f"attention.attention.{name}.bias"].reshape(heads, -1)
    out[att + "out/kernel"] = t[hf + "attention.output.dense.weight"].T.reshape(heads, -1, d)
    out[att + "out/bias"] = t[hf + "attention.output.dense.bias"]
    out[blk + "MlpBlock_3/Dense_0/kernel"] = t[hf + "intermediate.dense.weight"].T
    out[blk + "MlpBlock_3/Dense_0/bias"] = t[hf + "intermediate.dense.bias"]
    out[blk + "MlpBlock_3/Dense_1/kernel"] = t[hf + "output.dense.weight"].T
    out[blk + "MlpBlock_3/Dense_1/bias"] = t[hf + "output.dense.bias"]
    i += 1
  return out


def test_google_vit_npz_round_trip_matches_hf_import(tmp_path):
  model = save_tiny_vit(tmp_path / "hf")
  # The on-disk (hub) key names; v5 renames modules in memory and maps them back when saving.
  hub = load_file(str(tmp_path / "hf" / "model.safetensors"))
  np.savez(tmp_path / "vit.npz", **_hf_to_vit_jax_npz(hub, heads=4))
  hf_params, hf_cfg = vit.convert_checkpoint(str(tmp_path / "hf"), image_size=(256, 128))
  npz_params, npz_cfg = vit.convert_checkpoint(str(tmp_path / "vit.npz"), image_size=(256, 128))
  assert (npz_cfg.num_heads, npz_cfg.num_layers, npz_cfg.grid, npz_cfg.pooler) == (
    4,
    2,
    (16, 8),
    True,
  )
  x = np.random.default_rng(0).normal(size=(2, 256, 128, 3)).astype(np.float32)
  # The npz carries no epsilon (Google ViT uses 1e-6); compare like for like with HF's 1e-12.
  npz_cfg = vit.ViTConfig(**{**npz_cfg.to_dict(), "layer_norm_eps": hf_cfg.layer_norm_eps})
  assert npz_cfg == hf_cfg
  ours = jax.jit(vit.ViT(hf_cfg).apply)
  a, b = ours({"params": hf_params}, x), ours({"params": npz_params}, x)
  assert max_abs_diff(a["tokens"], b["tokens"]) <= 1e-5
  assert max_abs_diff(a["pooled"], b["pooled"]) <= 1e-5
  ref = torch_out(model, pixel_values=x.transpose(0, 3, 1, 2).copy(), interpolate_pos_encoding=True)
  assert max_abs_diff(b["tokens"], ref["tokens"]) <= 1e-4

  # A wrongly shaped tensor is named with both shapes.
  bad = dict(np.load(tmp_path / "vit.npz"))
  bad["Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias"] = np.zeros(7, np.float32)
  np.savez(tmp_path / "bad.npz", **bad)
  with pytest.raises(W.WeightImportError, match=r"Dense_1/bias -> block_1/mlp/fc2/bias: \(7,\)"):
    vit.convert_checkpoint(str(tmp_path / "bad.npz"))
  np.savez(tmp_path / "other.npz", w=np.zeros(3))
  with pytest.raises(W.WeightImportError, match="not a Google ViT .npz"):
    vit.convert_checkpoint(str(tmp_path / "other.npz"))
