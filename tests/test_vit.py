"""ViT: parity with transformers' ViTModel (224 and 256x128), TransReID options, MAE masking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from retext_jax.models import layers, vit

torch = pytest.importorskip("torch", reason="transformers+torch CPU is the parity reference")
from encoder_utils import max_abs_diff, save_tiny_vit, torch_out  # noqa: E402


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory):
  folder = tmp_path_factory.mktemp("hf_vit")
  return folder, save_tiny_vit(folder)


@pytest.mark.parametrize("hw", [(224, 224), (256, 128)])
def test_matches_hf_vit(hf_vit, hw):
  folder, model = hf_vit
  params, config = vit.convert_checkpoint(str(folder), image_size=hw)
  assert config.grid == (hw[0] // 16, hw[1] // 16) and config.layer_norm_eps == 1e-12
  x = np.random.default_rng(1).normal(size=(2, *hw, 3)).astype(np.float32)
  # HF resizes its 14x14 position grid on the fly (torch bicubic); ours was resized at import.
  ref = torch_out(model, pixel_values=x.transpose(0, 3, 1, 2).copy(), interpolate_pos_encoding=True)
  out = vit.ViT(config).apply({"params": params}, x)
  assert out["tokens"].shape == (2, 1 + config.num_patches, 32)
  assert max_abs_diff(out["tokens"], ref["tokens"]) <= 1e-4
  assert max_abs_diff(out["cls"], ref["tokens"][:, 0]) <= 1e-4
  assert max_abs_diff(out["patch_tokens"], ref["tokens"][:, 1:]) <= 1e-4
  assert max_abs_diff(out["pooled"], ref["pooled"]) <= 1e-4


def test_bfloat16_close_to_float32(hf_vit):
  params, config = vit.convert_checkpoint(str(hf_vit[0]), image_size=(256, 128))
  x = np.random.default_rng(2).normal(size=(2, 256, 128, 3)).astype(np.float32)
  f32 = vit.ViT(config).apply({"params": params}, x)["tokens"]
  bf16 = vit.ViT(config, dtype=jnp.bfloat16).apply({"params": params}, x)["tokens"]
  assert bf16.dtype == jnp.bfloat16
  rel = np.linalg.norm(np.asarray(bf16, np.float32) - f32) / np.linalg.norm(f32)
  assert rel <= 1e-2


def _layer_norm(x, eps):
  mu = x.mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(x.var(-1, keepdims=True) + eps)


def test_overlapping_patches_and_camera_embedding_match_numpy():
  """Embedding path re-derived in numpy: strided patches, CLS, positions, camera table."""
  cfg = vit.ViTConfig(
    image_size=(40, 28),
    patch_size=8,
    stride=6,
    hidden_size=8,
    num_layers=0,
    num_heads=2,
    mlp_dim=16,
    num_cameras=3,
    camera_coef=3.0,
  )
  assert cfg.grid == ((40 - 8) // 6 + 1, (28 - 8) // 6 + 1) == (6, 4)
  x = np.random.default_rng(0).normal(size=(2, 40, 28, 3)).astype(np.float32)
  cam = np.array([2, 0])
  params = vit.ViT(cfg).init(jax.random.key(0), x, camera=cam)["params"]
  params = jax.tree.map(np.asarray, params)
  params["cls_token"] = np.random.default_rng(1).normal(size=(1, 1, 8)).astype(np.float32)
  out = vit.ViT(cfg).apply({"params": params}, x, camera=cam)

  k, b = params["patch_embed"]["kernel"], params["patch_embed"]["bias"]
  patches = np.stack(
    [x[:, r : r + 8, c : c + 8].reshape(2, -1) for r in range(0, 33, 6) for c in range(0, 21, 6)], 1
  )
  tok = patches @ k.reshape(-1, 8) + b
  tok = np.concatenate([np.broadcast_to(params["cls_token"], (2, 1, 8)), tok], 1)
  tok = tok + params["pos_embed"] + 3.0 * params["camera_embed"][cam][:, None]
  ref = _layer_norm(tok, 1e-6) * params["norm"]["scale"] + params["norm"]["bias"]
  assert out["tokens"].shape == (2, 25, 8)
  assert max_abs_diff(out["tokens"], ref) <= 1e-5
  # Unknown camera (test time, exported extractor): the mean camera embedding.
  unknown = vit.ViT(cfg).apply({"params": params}, x)
  tok = tok - 3.0 * params["camera_embed"][cam][:, None] + 3.0 * params["camera_embed"].mean(0)
  ref = _layer_norm(tok, 1e-6) * params["norm"]["scale"] + params["norm"]["bias"]
  assert max_abs_diff(unknown["tokens"], ref) <= 1e-5


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_patch_mask_encodes_visible_patches_only(stem):
  # The conv stem's 3x3 convolutions see across patch borders: masked patches must be blanked
  # before it, or their pixels would leak into the visible tokens.
  cfg = vit.ViTConfig(
    image_size=(32, 16), patch_size=8, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32,
    stem=stem,
  )
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 32, 16, 3)).astype(np.float32)
  mask = np.zeros((2, 8), bool)
  mask[0, [1, 4, 5, 7]] = True
  mask[1, [0, 2, 3, 6]] = True
  model = vit.ViT(cfg)
  params = model.init(jax.random.key(0), x)["params"]
  out = model.apply({"params": params}, x, patch_mask=mask)
  np.testing.assert_array_equal(out["visible_ids"], [[0, 2, 3, 6], [1, 4, 5, 7]])
  assert out["patch_tokens"].shape == (2, 4, 16)
  # Masked pixels cannot influence the result: perturb patch (row 0, col 1) of image 0 = id 1.
  x2 = x.copy()
  x2[0, 0:8, 8:16] += 5.0
  out2 = model.apply({"params": params}, x2, patch_mask=mask)
  assert max_abs_diff(out["tokens"], out2["tokens"]) == 0.0
  full = model.apply({"params": params}, x2)
  assert max_abs_diff(full["tokens"][0], model.apply({"params": params}, x)["tokens"][0]) > 1e-3
  # Under jit the mask is traced: the count must be static, and it gives the same result.
  jitted = jax.jit(lambda p, im, m: model.apply({"params": p}, im, patch_mask=m, num_masked=4))
  # (the conv stem's four conv + LayerNorm layers, fused differently under jit, round more:
  # measured 1.1e-6 against 3e-7 for the patch stem, on tokens of magnitude ~3)
  tol = 1e-6 if stem == "patch" else 4e-6
  assert max_abs_diff(jitted(params, x, mask)["tokens"], out["tokens"]) <= tol
  with pytest.raises(ValueError, match="same|as many"):
    bad = mask.copy()
    bad[0, 0] = True
    model.apply({"params": params}, x, patch_mask=bad)


def test_conv_stem_is_strided_3x3_convolutions_on_the_patch_grid():
  cfg = vit.vit_config("tiny", 16, image_size=(64, 32), num_layers=0, stem="conv")
  x = np.random.default_rng(1).normal(size=(1, 64, 32, 3)).astype(np.float32)
  params = vit.ViT(cfg).init(jax.random.key(0), x)["params"]
  stem = params["stem"]
  assert [stem[f"conv_{i}"]["kernel"].shape for i in range(4)] == [
    (3, 3, 3, 24), (3, 3, 24, 48), (3, 3, 48, 96), (3, 3, 96, 192)]
  # numpy re-derivation of conv -> LayerNorm -> GELU (x4) -> 1x1 projection.
  h = x[0].astype(np.float64)
  for i in range(4):
    conv = stem[f"conv_{i}"]
    k, b = np.asarray(conv["kernel"], np.float64), np.asarray(conv["bias"])
    p = np.pad(h, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((h.shape[0] // 2, h.shape[1] // 2, k.shape[-1]))
    for r in range(out.shape[0]):
      for c in range(out.shape[1]):
        out[r, c] = np.einsum("ijk,ijkl->l", p[2 * r:2 * r + 3, 2 * c:2 * c + 3], k) + b
    mu, var = out.mean(-1, keepdims=True), out.var(-1, keepdims=True)
    out = (out - mu) / np.sqrt(var + 1e-6) * stem[f"norm_{i}"]["scale"] + stem[f"norm_{i}"]["bias"]
    h = np.asarray(jax.nn.gelu(jnp.asarray(out, jnp.float32)), np.float64)
  tokens = h @ np.asarray(stem["proj"]["kernel"])[0, 0] + stem["proj"]["bias"]
  want = tokens.reshape(-1, 192) + np.asarray(params["pos_embed"])[0, 1:]
  got = vit.ViT(cfg).apply({"params": params}, x)["tokens"]
  ref = _layer_norm(want, 1e-6) * params["norm"]["scale"] + params["norm"]["bias"]
  np.testing.assert_allclose(np.asarray(got[0, 1:]), ref, atol=2e-4)


def test_no_pos_mask_roundtrip_without_layers():
  """With no blocks, visible tokens equal the full run's tokens at the kept ids."""
  cfg = vit.ViTConfig(
    image_size=(32, 32), patch_size=8, hidden_size=8, num_layers=0, num_heads=2, mlp_dim=8
  )
  x = np.random.default_rng(3).normal(size=(3, 32, 32, 3)).astype(np.float32)
  mask = np.stack([np.random.default_rng(s).permutation(16) < 12 for s in range(3)])
  model = vit.ViT(cfg)
  params = model.init(jax.random.key(1), x)["params"]
  full = model.apply({"params": params}, x)["patch_tokens"]
  part = model.apply({"params": params}, x, patch_mask=mask)
  expect = np.stack([np.asarray(full)[i][~mask[i]] for i in range(3)])
  np.testing.assert_array_equal(part["visible_ids"], [np.flatnonzero(~m) for m in mask])
  assert max_abs_diff(part["patch_tokens"], expect) <= 1e-6


def test_dropout_and_drop_path_only_in_training():
  cfg = vit.ViTConfig(
    image_size=(32, 16),
    patch_size=8,
    hidden_size=16,
    num_layers=2,
    num_heads=2,
    mlp_dim=32,
    dropout_rate=0.1,
    drop_path_rate=0.2,
  )
  x = np.random.default_rng(0).normal(size=(2, 32, 16, 3)).astype(np.float32)
  model = vit.ViT(cfg)
  params = model.init(jax.random.key(0), x)["params"]
  a = model.apply({"params": params}, x)["cls"]
  assert max_abs_diff(a, model.apply({"params": params}, x)["cls"]) == 0.0
  t = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(1)})["cls"]
  assert max_abs_diff(a, t) > 1e-3

  ones = jnp.ones((4000, 3))
  dropped = layers.DropPath(0.25).apply(
    {}, ones, deterministic=False, rngs={"dropout": jax.random.key(0)}
  )
  rows = np.asarray(dropped)
  np.testing.assert_allclose(np.unique(rows), [0.0, 1 / 0.75], rtol=1e-6)
  assert np.all(rows.min(1) == rows.max(1))  # whole samples are dropped, not elements
  assert abs((rows[:, 0] == 0).mean() - 0.25) < 0.03


@pytest.mark.parametrize(
  "size,width,depth,heads",
  [("tiny", 192, 12, 3), ("small", 384, 12, 6), ("base", 768, 12, 12), ("large", 1024, 24, 16)],
)
def test_named_sizes(size, width, depth, heads):
  cfg = vit.vit_config(size, image_size=(256, 128))
  assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.mlp_dim) == (
    width,
    depth,
    heads,
    4 * width,
  )
  assert cfg.grid == (16, 8)


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("pooler", [False, True])
def test_vit_b16_param_count_equals_hf(pooler):
  from transformers import ViTConfig, ViTModel

  with torch.device("meta"):  # shapes only, nothing allocated
    ref = ViTModel(ViTConfig(), add_pooling_layer=pooler)
  # HF's mask_token exists only with use_mask_token=True; it is not built here.
  expected = sum(p.numel() for p in ref.parameters())
  ours = _count(vit.abstract_params(vit.vit_config("base", pooler=pooler)))
  assert ours == expected
  # HF counts (vit-base-patch16-224-in21k): 85,798,656 without the pooler, 86,389,248 with it.
  assert ours == (86_389_248 if pooler else 85_798_656)


def test_bad_configs_name_the_field():
  with pytest.raises(ValueError, match="smaller than the patch"):
    vit.ViTConfig(image_size=(256, 8))
  assert vit.vit_config("base", image_size=(256, 128), stride=12).grid == (21, 10)  # TransReID
  with pytest.raises(ValueError, match="unknown ViT size"):
    vit.vit_config("huge-ish")
  with pytest.raises(ValueError, match="stem='conv' needs"):
    vit.vit_config("tiny", image_size=(256, 128), stride=12, stem="conv")
  with pytest.raises(ValueError, match="unknown ViT stem"):
    vit.vit_config("tiny", stem="resnet")
  with pytest.raises(ValueError, match="unknown ViTConfig fields"):
    vit.ViTConfig.from_dict({"hiden_size": 3})
