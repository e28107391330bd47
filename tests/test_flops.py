"""The analytic FLOP count behind the benchmarks' MFU (hand-computed values, and XLA's own count of
the compiled forward pass, which also counts element-wise work), and the GPU suite's CPU path."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from benchmarks import flops
from retext_jax.models import bert, vit


def test_transformer_layer_by_hand():
  # 10 tokens, width 4, MLP 16: projections 8*10*16, attention 4*100*4, MLP 4*10*4*16.
  assert flops.transformer_layer(10, 4, 16) == 1280 + 1600 + 2560
  # + cross-attention to 3 tokens: q/out 4*10*16, k/v 4*3*16, scores and sum 4*10*3*4.
  assert flops.transformer_layer(10, 4, 16, context=3) == 5440 + 640 + 192 + 480


def _xla_flops(module: nn.Module, *inputs) -> float:
  variables = module.init(jax.random.key(0), *inputs)
  fn = jax.jit(lambda v, *x: jax.tree_util.tree_leaves(module.apply(v, *x))[0])
  cost = fn.lower(variables, *inputs).compile().cost_analysis()
  return (cost[0] if isinstance(cost, list) else cost)["flops"]


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_vit_forward_within_xla_count(stem):
  cfg = vit.ViTConfig(image_size=(128, 64), patch_size=16, hidden_size=192, num_layers=2,
                      num_heads=3, mlp_dim=768, stem=stem)
  xla = _xla_flops(vit.ViT(cfg), jnp.zeros((2, 128, 64, 3))) / 2
  assert 0.9 * xla <= flops.vit_forward(cfg) <= xla


def test_bert_forward_within_xla_count():
  cfg = bert.BertConfig(vocab_size=500, hidden_size=128, num_layers=2, num_heads=4,
                        intermediate_size=512)
  tokens = jnp.zeros((2, 24), jnp.int32)
  xla = _xla_flops(bert.Bert(cfg), tokens, jnp.ones_like(tokens)) / 2
  assert 0.9 * xla <= flops.bert_forward(cfg, 24) <= xla


@pytest.mark.slow
def test_gpu_suite_runs_its_cpu_path(tmp_path):
  # The accelerator suite's commands at small sizes on CPU: both tables are produced and the
  # PyTorch step agrees with ours (the GPU run uses the same scripts with the paper config).
  import json
  import os
  import subprocess
  import sys

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "--cpu"], cwd=root,
                        env=dict(os.environ, RESULTS_DIR=str(tmp_path), PYTHON=sys.executable),
                        capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  step = json.load(open(tmp_path / "train_step_tiny.json"))
  assert step["images_per_s"] > 0 and step["torch"]["modes"]["eager"]["images_per_s"] > 0
  assert max(step["torch"]["loss_agreement"]["max_abs_diff"].values()) <= 1e-4
  device = json.load(open(tmp_path / "evaluation_device.json"))["rows"][0]
  assert device["max_metric_gap_500_queries"] <= 1e-5 and 0 < device["mAP"] <= 1
