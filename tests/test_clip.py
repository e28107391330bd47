"""CLIP towers against transformers' CLIPModel (torch CPU, the reference implementation)."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from retext_jax.models import clip  # noqa: E402
from retext_jax.models.weights import WeightImportError  # noqa: E402

TOL = 1e-4
VOCAB, MAX_LEN, EOT = 100, 16, 99  # EOT is the highest id, as 49407 is in OpenAI's vocabulary


def _tiny_hf_config(eos_token_id):
  return transformers.CLIPConfig(
    text_config=dict(
      vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, max_position_embeddings=MAX_LEN, bos_token_id=98,
      eos_token_id=eos_token_id, pad_token_id=1,
    ),
    vision_config=dict(
      hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
      image_size=32, patch_size=8,
    ),
    projection_dim=24,
  )


def _save_tiny(folder, eos_token_id):
  """A random tiny CLIPModel; every tensor perturbed so LN scales/biases are not 1/0."""
  torch.manual_seed(0)
  model = transformers.CLIPModel(_tiny_hf_config(eos_token_id)).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
    model.logit_scale.fill_(3.1)
  model.save_pretrained(folder)
  return model


def _text_inputs(eos):
  """Right-padded batch of 3 of different lengths; ids above `eos` make argmax != first eos."""
  rng = np.random.default_rng(1)
  ids = np.zeros((3, MAX_LEN), np.int64)
  mask = np.zeros((3, MAX_LEN), np.int64)
  for row, n in enumerate((5, 11, MAX_LEN)):
    ids[row, 0] = 98
    ids[row, 1 : n - 1] = rng.integers(3, 98, n - 2)
    ids[row, n - 1] = eos
    ids[row, n:] = EOT if eos == EOT else 1
    mask[row, :n] = 1
  if eos != EOT:
    ids[0, 1] = 97  # a content token larger than eos before it
  return ids, mask


def _images(h, w):
  return np.random.default_rng(2).normal(size=(2, 3, h, w)).astype(np.float32)


@torch.no_grad()
def _reference(model, pixels, ids, mask, interpolate=False):
  t = lambda a: torch.from_numpy(a)
  vis = model.vision_model(pixel_values=t(pixels), interpolate_pos_encoding=interpolate)
  txt = model.text_model(input_ids=t(ids), attention_mask=t(mask))
  out = model(
    input_ids=t(ids), pixel_values=t(pixels), attention_mask=t(mask),
    interpolate_pos_encoding=interpolate,
  )
  return {
    "cls": vis.pooler_output,
    "patch_tokens": vis.last_hidden_state[:, 1:],
    "image_embedding": model.visual_projection(vis.pooler_output),
    "text_tokens": txt.last_hidden_state,
    "pooled": txt.pooler_output,
    "text_embedding": model.text_projection(txt.pooler_output),
    "logits_per_image": out.logits_per_image,
  }


def _ours(config, params, pixels, ids, mask, dtype=jnp.float32):
  apply = jax.jit(clip.CLIP(config, dtype=dtype).apply)
  out = apply({"params": params}, pixels.transpose(0, 2, 3, 1), ids, mask)
  return {
    "cls": out["image"]["cls"],
    "patch_tokens": out["image"]["patch_tokens"],
    "image_embedding": out["image"]["embedding"],
    "text_tokens": out["text"]["tokens"],
    "pooled": out["text"]["pooled"],
    "text_embedding": out["text"]["embedding"],
    "logits_per_image": out["logits_per_image"],
  }


def _ours_vision(config, params, pixels):
  apply = jax.jit(clip.CLIP(config).apply, static_argnames="method")
  out = apply({"params": params}, pixels.transpose(0, 2, 3, 1), method="encode_image")
  return {
    "cls": out["cls"], "patch_tokens": out["patch_tokens"], "image_embedding": out["embedding"]
  }


@torch.no_grad()
def _reference_vision(model, pixels):
  vis = model.vision_model(pixel_values=torch.from_numpy(pixels), interpolate_pos_encoding=True)
  return {
    "cls": vis.pooler_output,
    "patch_tokens": vis.last_hidden_state[:, 1:],
    "image_embedding": model.visual_projection(vis.pooler_output),
  }


def _assert_close(ours, ref, tol=TOL):
  for name, want in ref.items():
    got = np.asarray(ours[name], np.float32)
    want = want.numpy()
    assert got.shape == want.shape, name
    err = float(np.abs(got - want).max())
    assert err <= tol, f"{name}: max abs diff {err:.2e} > {tol}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """Legacy eos_token_id 2 (argmax pooling), as in OpenAI's config.json files."""
  folder = tmp_path_factory.mktemp("clip")
  model = _save_tiny(folder, 2)
  params, config = clip.load_clip(str(folder))
  return folder, model, params, config


def test_config_from_hf(tiny):
  folder, model, _, config = tiny
  assert config.vision == clip.CLIPVisionConfig(
    hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, patch_size=8, image_size=(32, 32)
  )
  assert config.text.max_len == MAX_LEN and config.text.vocab_size == VOCAB
  assert config.text.eos_token_id == model.config.text_config.eos_token_id == 2
  assert config.projection_dim == 24
  assert clip.config_from_dict(config.to_dict()) == config


@pytest.fixture(scope="module")
def square_f32(tiny):
  """Our float32 outputs on the tiny model (compiled once, shared by two tests)."""
  _, _, params, config = tiny
  ids, mask = _text_inputs(EOT)
  return _ours(config, params, _images(32, 32), ids, mask)


def test_square_matches_transformers(tiny, square_f32):
  _, model, params, _ = tiny
  ids, mask = _text_inputs(EOT)
  _assert_close(square_f32, _reference(model, _images(32, 32), ids, mask))
  assert np.asarray(params["logit_scale"]) == pytest.approx(3.1)


def test_first_eos_pooling_differs_from_argmax(tiny):
  """Guards the test inputs: with eos 99 both rules agree, with eos 50 they must not."""
  ids, _ = _text_inputs(50)
  first = np.asarray(clip.eos_positions(jnp.asarray(ids), 50))
  np.testing.assert_array_equal(first, [4, 10, 15])
  assert (np.asarray(clip.eos_positions(jnp.asarray(ids), 2)) != first).any()


def test_first_eos_pooling_matches_transformers(tmp_path):
  model = _save_tiny(tmp_path, 50)
  params, config = clip.load_clip(str(tmp_path))
  ids, mask = _text_inputs(50)
  apply = jax.jit(clip.CLIP(config).apply, static_argnames="method")
  out = apply({"params": params}, ids, mask, method="encode_text")
  with torch.no_grad():
    ref = model.text_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    ref_embedding = model.text_projection(ref.pooler_output)
  _assert_close(
    {"tokens": out["tokens"], "pooled": out["pooled"], "embedding": out["embedding"]},
    {"tokens": ref.last_hidden_state, "pooled": ref.pooler_output, "embedding": ref_embedding},
  )


def test_non_square_interpolation_matches_transformers(tiny):
  """256x128-style crops: HF interpolate_pos_encoding=True resizes the 4x4 grid to 8x4."""
  folder, model, params, config = tiny
  pixels = _images(64, 32)
  ref = _reference_vision(model, pixels)
  assert ref["patch_tokens"].shape[1] == 8 * 4
  _assert_close(_ours_vision(config, params, pixels), ref)
  # Resizing once at import gives the same model at its new native grid.
  params_r, config_r = clip.load_clip(str(folder), image_size=(64, 32))
  assert config_r.vision.image_size == (64, 32)
  assert params_r["vision"]["pos_embedding"].shape == (1 + 8 * 4, 32)
  _assert_close(_ours_vision(config_r, params_r, pixels), ref)


def test_upsampled_square_matches_transformers(tiny):
  _, model, params, config = tiny
  pixels = _images(48, 48)
  _assert_close(_ours_vision(config, params, pixels), _reference_vision(model, pixels))


def test_bfloat16_close_to_float32(tiny, square_f32):
  _, _, params, config = tiny
  ids, mask = _text_inputs(EOT)
  f32 = dict(square_f32)
  bf16 = _ours(config, params, _images(32, 32), ids, mask, dtype=jnp.bfloat16)
  assert bf16["image_embedding"].dtype == jnp.bfloat16
  logits = {k: np.asarray(out.pop("logits_per_image"), np.float32) for k, out in
            (("f32", f32), ("bf16", bf16))}
  for name in f32:
    want = np.asarray(f32[name], np.float32)
    got = np.asarray(bf16[name], np.float32)
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert rel <= 1e-2, f"{name}: relative error {rel:.2e}"
  # Logits are exp(scale) * cosine, and random embeddings are nearly orthogonal (|cos| ~ 0.05),
  # so their relative error is ill-conditioned; the cosine error is what bfloat16 can change.
  cos_err = np.abs(logits["bf16"] - logits["f32"]).max() / math.exp(float(params["logit_scale"]))
  assert cos_err <= 1e-2, f"cosine error {cos_err:.2e}"


def test_vit_b16_param_count_matches_transformers():
  hf_cfg = transformers.CLIPConfig(vision_config=dict(patch_size=16))
  with torch.device("meta"):
    model = transformers.CLIPModel(hf_cfg)
  want = sum(p.numel() for p in model.parameters())
  config = clip.vit_b16()
  got = sum(math.prod(x.shape) for x in jax.tree.leaves(clip.abstract_params(config)))
  assert got == want
  # The preset is HF's config but for the legacy eos marker of the OpenAI config.json and
  # HF's rounded default temperature (2.6592 for log(1/0.07)).
  from_hf = clip.CLIPConfig.from_hf_config(hf_cfg.to_dict())
  assert from_hf.logit_scale_init == pytest.approx(config.logit_scale_init, abs=1e-4)
  legacy_text = dataclasses.replace(from_hf.text, eos_token_id=2)
  assert dataclasses.replace(from_hf, text=legacy_text, logit_scale_init=math.log(1 / 0.07)) == (
    config
  )


def test_missing_key_is_named(tiny, tmp_path):
  folder = tiny[0]
  tensors = load_file(str(folder / "model.safetensors"))
  del tensors["text_model.encoder.layers.1.mlp.fc2.bias"]
  tensors["vision_model.embeddings.position_ids"] = np.arange(17, dtype=np.int64)[None]
  save_file(tensors, str(tmp_path / "model.safetensors"))
  (tmp_path / "config.json").write_text((folder / "config.json").read_text())
  with pytest.raises(WeightImportError, match="text_model.encoder.layers.1.mlp.fc2.bias") as e:
    clip.load_clip(str(tmp_path))
  assert not e.value.unexpected  # the position_ids buffer is ignored, not reported


def test_wrong_model_kind_is_rejected(tiny, tmp_path):
  folder = tiny[0]
  (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
  (tmp_path / "config.json").write_text('{"model_type": "bert"}')
  with pytest.raises(WeightImportError, match="model_type"):
    clip.load_clip(str(tmp_path))


def test_overlapping_stride_resizes_the_grid(tiny):
  folder, _, params, config = tiny
  params_s, config_s = clip.load_clip(str(folder), stride=4)
  assert config_s.vision.grid == (7, 7)  # (32 - 8) // 4 + 1
  assert params_s["vision"]["pos_embedding"].shape == (1 + 49, 32)
  cls_pos = lambda p: p["vision"]["pos_embedding"][0]
  np.testing.assert_array_equal(cls_pos(params_s), cls_pos(params))
  np.testing.assert_array_equal(params_s["text"]["pos_embedding"], params["text"]["pos_embedding"])
  assert clip.config_from_dict(config_s.to_dict()) == config_s
  out = _ours_vision(config_s, params_s, _images(32, 32))
  assert out["patch_tokens"].shape == (2, 49, 32)
  with pytest.raises(ValueError, match="unknown CLIPVisionConfig fields"):
    clip.config_from_dict({**config.to_dict(), "vision": {"hidden": 3}})


def test_convert_cli_round_trip(tiny, tmp_path):
  from retext_jax.models import pretrained
  from retext_jax.tools import convert

  folder, _, params, config = tiny
  out = tmp_path / "converted"
  assert convert.main(["--from", str(folder), "--kind", "clip", "--out", str(out)]) == 0
  params_c, config_c = pretrained.load_converted(out)
  assert config_c == config
  jax.tree.map(np.testing.assert_array_equal, params_c, params)
