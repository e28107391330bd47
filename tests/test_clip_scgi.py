"""CLIP-SCGI's modules and losses on an in-memory batch: CGI's pseudo-token reaches the prompt,
CFF depends on both towers, the test-time feature is the image tower through the BNNeck and
needs no text, and the loss is the numpy re-derivation of its terms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs import clip_scgi
from retext_jax import methods
from retext_jax.methods import base
from retext_jax.methods.clip_scgi.model import CLIPSCGI

P, K = 3, 2
CAPTIONS = ["a man in a red shirt and blue trousers", "a woman with a black bag",
            "a man wearing white shoes"]


def _method(**model):
  config = clip_scgi.get_config("tiny")
  with config.unlocked():
    config.model.update(model)
  return methods.get("clip_scgi").create(config, base.DataInfo(num_classes=P, num_cameras=2))


@pytest.fixture(scope="module")
def built():
  init = _method()
  method = init.method
  variables = method.init_variables(jax.random.key(0))
  rng = np.random.default_rng(0)
  h, w = method.config.input.image_size
  tokens, mask = init.tokenizer.encode([CAPTIONS[i // K] for i in range(P * K)],
                                       method.config.input.max_text_len)
  batch = {"multicam/image": rng.normal(size=(P * K, h, w, 3)).astype(np.float32),
           "multicam/pid": np.repeat(np.arange(P), K).astype(np.int32),
           "multicam/camid": np.tile(np.arange(K), P).astype(np.int32),
           "multicam/tokens": tokens, "multicam/token_mask": mask}
  return method, variables, batch


def _forward(method, variables, batch, **over):
  b = {**batch, **over}
  return method.model.apply(variables, b["multicam/image"], b["multicam/camid"],
                            b["multicam/tokens"], b["multicam/token_mask"])


def test_the_prompt_template_places_the_pseudo_token(built):
  method, _, _ = built
  c = method.model_config
  assert c.prompt_mask[c.placeholder] == 1 and c.placeholder == 5  # [CLS] a photo of a X person
  assert method.streams == (base.MULTICAM_TEXT,)


def test_cgi_pseudo_token_reaches_the_composed_prompt(built):
  method, variables, batch = built
  out = _forward(method, variables, batch)
  other = batch["multicam/image"].copy()
  other[0] = -other[0]
  moved = _forward(method, variables, batch, **{"multicam/image": other})
  # Image 0 changed: its pseudo-token and its prompt embedding change, the others' do not.
  assert not np.allclose(out["prompt_embedding"][0], moved["prompt_embedding"][0], atol=1e-5)
  np.testing.assert_allclose(out["prompt_embedding"][1:], moved["prompt_embedding"][1:],
                             atol=1e-5)
  # The caption steers it too (through v~ = v * t).
  tokens = batch["multicam/tokens"].copy()
  tokens[0] = batch["multicam/tokens"][-1]
  recap = _forward(method, variables, batch, **{"multicam/tokens": tokens})
  assert not np.allclose(out["pseudo_token"][0], recap["pseudo_token"][0], atol=1e-6)
  grads, _ = jax.grad(method.loss_fn, has_aux=True)(
      variables["params"], {"batch_stats": variables["batch_stats"]}, batch, jax.random.key(1))
  norms = {k: float(np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree_util.tree_leaves(v))))
           for k, v in grads.items()}
  assert norms["cgi_module"] > 0 and norms["cff_module"] > 0 and norms["vision"] > 0


def test_cff_depends_on_both_towers(built):
  method, variables, batch = built
  out = _forward(method, variables, batch)
  other = batch["multicam/image"].copy()
  other[1] = np.flip(other[1], axis=0)
  by_image = _forward(method, variables, batch, **{"multicam/image": other})
  assert not np.allclose(out["cff_feat"][1], by_image["cff_feat"][1], atol=1e-5)
  flat = traverse_util.flatten_dict(variables["params"], sep="/")
  key = "text/token_embed/embedding"
  flat[key] = flat[key] * 1.5  # another text tower, the same images
  text_vars = {**variables, "params": traverse_util.unflatten_dict(flat, sep="/")}
  by_text = _forward(method, text_vars, batch)
  assert not np.allclose(out["cff_feat"], by_text["cff_feat"], atol=1e-5)


def test_test_time_feature_is_the_image_tower_through_the_bnneck(built):
  method, variables, batch = built
  images = batch["multicam/image"]
  image_only = {"params": {k: variables["params"][k] for k in ("vision", "bnneck")},
                "batch_stats": variables["batch_stats"]}
  got = np.asarray(method.predict_fns()[base.REID](image_only, images))  # no text parameters
  cls = method.model.apply(variables, images,
                           method=lambda m, x: m.vision(x, camera=jnp.zeros(len(x), int)))["cls"]
  stats, scale = variables["batch_stats"]["bnneck"], variables["params"]["bnneck"]["scale"]
  bn = (np.asarray(cls) - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * scale
  np.testing.assert_allclose(got, bn / np.linalg.norm(bn, axis=1, keepdims=True), atol=2e-5)


def _log_softmax(x, axis=-1):
  x = x - x.max(axis=axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def test_loss_is_the_numpy_sum_of_its_terms(built):
  method, variables, batch = built
  state = {"batch_stats": variables["batch_stats"]}
  loss, (metrics, _) = method.loss_fn(variables["params"], state, batch, jax.random.key(0))
  out, _ = method.model.apply(variables, batch["multicam/image"], batch["multicam/camid"],
                              batch["multicam/tokens"], batch["multicam/token_mask"], train=True,
                              mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
  pid, n = batch["multicam/pid"], P * K
  # ITC: symmetric cross-entropy of cos * exp(logit_scale), pairs on the diagonal.
  v = np.asarray(out["image_embedding"], np.float64)
  t = np.asarray(out["prompt_embedding"], np.float64)
  v, t = v / np.linalg.norm(v, axis=1, keepdims=True), t / np.linalg.norm(t, axis=1, keepdims=True)
  logits = min(np.exp(float(out["logit_scale"])), 100.0) * v @ t.T
  itc = -0.5 * (np.mean(np.diag(_log_softmax(logits, 1))) + np.mean(np.diag(_log_softmax(
      logits.T, 1))))
  np.testing.assert_allclose(metrics["loss/itc"], itc, rtol=1e-5)
  # CFF's ID loss with label smoothing 0.1.
  target = np.full((n, P), 0.1 / P) + 0.9 * np.eye(P)[pid]
  cff = -np.mean(np.sum(target * _log_softmax(np.asarray(out["cff_logits"], np.float64)), 1))
  np.testing.assert_allclose(metrics["loss/cff_id"], cff, rtol=1e-5)
  lc = method.config.loss
  total = (lc.lambda_id * metrics["loss/id"] + lc.lambda_triplet * metrics["loss/triplet"]
           + lc.lambda_itc * itc + lc.lambda_cff * cff)
  np.testing.assert_allclose(loss, total, rtol=1e-5)


def test_the_baseline_is_the_image_tower_with_id_and_triplet_only():
  init = _method(cgi=False, cff=False)
  method = init.method
  variables = method.init_variables(jax.random.key(0))
  assert set(variables["params"]) == {"vision", "bnneck", "classifier"}
  assert method.streams == (base.MULTICAM,) and init.tokenizer is None
  assert set(method.predict_fns()) == {base.REID, base.IMAGE_EMBED}
  assert isinstance(method.model, CLIPSCGI)


def test_paper_recipe_runs_a_step_on_a_converted_tiny_clip(tmp_path):
  """The `paper` preset on a random tiny CLIPModel saved by transformers with a CLIP BPE vocab,
  converted with `python -m retext_jax.tools.convert --kind clip` (nothing downloaded)."""
  pytest.importorskip("torch")
  from encoder_utils import save_tiny_clip

  from retext_jax import optim
  from retext_jax.models import pretrained
  from retext_jax.tools import convert
  from retext_jax.train_step import create_state, make_train_step

  hf = tmp_path / "hf_clip"
  vocab = save_tiny_clip(hf)
  assert convert.main(["--from", str(hf), "--kind", "clip", "--out", str(tmp_path / "c")]) == 0
  config = clip_scgi.get_config("paper")
  with config.unlocked():
    config.init.clip = str(tmp_path / "c")
    config.input.image_size = (64, 32)
    config.model.update(cgi_heads=4, cff_heads=4)
  init = methods.get("clip_scgi").create(config, base.DataInfo(num_classes=P))
  method = init.method
  assert init.tokenizer.kind == "clip" and method.model_config.clip.text.eos_token_id == vocab - 1
  assert method.model_config.prompt_ids[method.model_config.placeholder] == \
      init.tokenizer.encode(["x"], 4)[0][0, 1]
  converted, _ = pretrained.load_converted(tmp_path / "c")
  variables = method.init_variables(jax.random.key(0))
  params, report = pretrained.merge(variables["params"], init.pretrained)
  assert not report["ignored"] and {k.split("/")[0] for k in report["loaded"]} == {
      "vision", "text", "temperature"}
  np.testing.assert_array_equal(params["vision"]["patch_embed"]["kernel"],
                                converted["vision"]["patch_embed"]["kernel"])
  tx, schedules = optim.make_optimizer(config.optim, 10, method.backbone_keys)
  state = create_state(method, tx, {**variables, "params": params}, jax.random.key(1))
  tokens, mask = init.tokenizer.encode(["the man walking in red"] * (P * K), 77)
  rng = np.random.default_rng(0)
  batch = {"multicam/image": rng.normal(size=(P * K, 64, 32, 3)).astype(np.float32),
           "multicam/pid": np.repeat(np.arange(P), K).astype(np.int32),
           "multicam/camid": np.zeros(P * K, np.int32), "multicam/tokens": tokens,
           "multicam/token_mask": mask}
  state, metrics = jax.jit(make_train_step(method, tx, schedules))(state, batch)
  assert int(state["step"]) == 1 and np.isfinite(float(metrics["loss/total"]))
  assert {"loss/id", "loss/triplet", "loss/itc", "loss/cff_id"} <= set(metrics)
