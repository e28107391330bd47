r"""LCR²S against the IRRA-style baseline on the synthetic text-to-image benchmark.

  python benchmarks/lcr2s_ablation.py --seeds 0 1 2

Rows, per seed, every model trained from scratch with its `demo` preset (`--preset`; the synthetic
CUHK-PEDES-layout test split: each caption queries every test image):
  1. IRRA-style baseline (`configs/irra.py:demo`);
  2. LCR²S student without distillation (`configs/lcr2s.py:demo,role=student,lambda_feat=0,
     lambda_rel=0`): the baseline's recipe in the LCR²S code, a control;
  3. LCR²S teacher, test-time features without a support set (`<workdir>/teacher` of row 5);
  4. LCR²S teacher with support sets: every test image fused with the other test images of its
     identity, every caption with the other captions of its identity. This reads the test
     identities, so it is an upper bound, not a result;
  5. LCR²S student with distillation (`configs/lcr2s.py:demo`, both stages).
Writes benchmarks/results/lcr2s_ablation.json and prints a markdown table of mean ± std.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the input_pipeline package, not benchmarks/input_pipeline.py
TARGET = "synthetic_captions_test"
METRICS = ("R1", "R5", "R10", "mAP", "mINP")
ROWS = ("IRRA-style baseline", "LCR²S student, no distillation",
        "LCR²S teacher, no support set", "LCR²S teacher with test support sets (upper bound)",
        "LCR²S student, distilled (LCR²S)")


def train(config: str, workdir: str, cache: str) -> float:
  start = time.time()
  cmd = [sys.executable, "-m", "retext_jax.main", f"--config={config}", f"--workdir={workdir}",
         f"--config.data.cache_dir={cache}"]
  subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  return time.time() - start


def final(workdir: str) -> dict:
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)["evals"]["t2i"][TARGET]


def with_support_sets(teacher_dir: str, cache: str) -> dict:
  """Text-to-image metrics of the teacher when every test sample is fused with the other test
  samples of its identity (the oracle support sets)."""
  import jax

  from retext_jax import data, evaluation, evaluators, inference
  from retext_jax.linalg import l2_normalize
  from retext_jax.methods.lcr2s.model import LCR2S

  teacher = inference.load(teacher_dir)
  config = teacher.config
  with config.unlocked():
    config.data.cache_dir = cache
  model, variables = teacher.method.model, teacher.variables
  dataset = data.load_targets(config)[TARGET]
  embed_image = jax.jit(lambda x: model.apply(variables, x, method=LCR2S.embed_image))
  embed_text = jax.jit(lambda t, m: model.apply(variables, t, m, method=LCR2S.embed_text))
  gallery = evaluators.Features.of(embed_image, dataset.test, data.input_config(config), 64)
  text, text_pids = evaluators.caption_embeddings(embed_text, gallery.records, teacher.tokenizer,
                                                  config.input.max_text_len, 64, TARGET)

  def fused(emb, pids, fuse):
    same = pids[:, None] == pids[None, :]  # the sample itself and its identity's others
    return np.asarray(l2_normalize(model.apply(variables, emb, emb, same, method=fuse)))

  g = fused(gallery.feats, gallery.pids, LCR2S.fuse_image)
  q = fused(text, text_pids, LCR2S.fuse_text)
  res = evaluation.evaluate_text_to_image(q @ g.T, text_pids, gallery.pids, max_rank=50)
  return evaluators.scalars(evaluators.summary(res, len(q), len(g)))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--preset", default="demo", help="of configs/irra.py and configs/lcr2s.py")
  ap.add_argument("--cache", default=os.path.expanduser("~/.cache/retext_jax/synthetic"))
  ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                "lcr2s_ablation.json"))
  args = ap.parse_args()
  rows = {name: [] for name in ROWS}
  seconds = {"irra": [], "lcr2s": []}
  with tempfile.TemporaryDirectory() as work:
    for seed in args.seeds:
      wd = {n: os.path.join(work, f"{n}_{seed}") for n in ("irra", "student", "lcr2s")}
      run = f"{args.preset},seed={seed}"
      seconds["irra"].append(train(f"configs/irra.py:{run}", wd["irra"], args.cache))
      rows[ROWS[0]].append(final(wd["irra"]))
      train(f"configs/lcr2s.py:{run},role=student,lambda_feat=0,lambda_rel=0", wd["student"],
            args.cache)
      rows[ROWS[1]].append(final(wd["student"]))
      seconds["lcr2s"].append(train(f"configs/lcr2s.py:{run}", wd["lcr2s"], args.cache))
      teacher = os.path.join(wd["lcr2s"], "teacher")
      rows[ROWS[2]].append(final(teacher))
      rows[ROWS[3]].append(with_support_sets(teacher, args.cache))
      rows[ROWS[4]].append(final(wd["lcr2s"]))
      print(f"seed {seed}: " + "; ".join(f"{n} mAP {r[-1]['mAP']:.3f}" for n, r in rows.items()),
            flush=True)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"seeds": args.seeds, "seconds": seconds, "rows": rows}, f, indent=2)
  pct = lambda v: f"{100 * np.mean(v):.1f} ± {100 * np.std(v):.1f}"
  print("\n| model | " + " | ".join(METRICS) + " |")
  print("|---|" + "---|" * len(METRICS))
  for name, runs in rows.items():
    print(f"| {name} | " + " | ".join(pct([r[k] for r in runs]) for k in METRICS) + " |")
  print(f"\n{len(args.seeds)} seeds ({args.seeds}); mean ± std. Wall per run: IRRA "
        f"{np.mean(seconds['irra']):.0f} s, LCR²S both stages {np.mean(seconds['lcr2s']):.0f} s.")


if __name__ == "__main__":
  main()
