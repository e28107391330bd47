r"""ReText ablation on the synthetic benchmark: which training signal buys target-domain accuracy.

  python benchmarks/ablation.py --seeds 0 1 --steps 300

Rows (each adds one signal to the row above, except row 2, the no-text control of row 3):
  1. Re-ID only on the multi-camera source;
  2. + captioned images without text (an ID loss over the captioned set's identities);
  3. Re-ID + L_iam (image-text matching on the captioned set);
  4. + L_sp;
  5. + L_rec (full ReText).
Each row is trained from scratch per seed with the `demo` preset; the table gives the target
mAP / rank-1 mean and standard deviation over seeds, and the step-0 (untrained) figures.
Writes benchmarks/results/ablation.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = [
    ("Re-ID only (multi-camera)", "lambda_iam=0,lambda_sp=0,lambda_rec=0,lambda_sc_id=0"),
    ("+ captioned images, no text (ID loss)", "lambda_iam=0,lambda_sp=0,lambda_rec=0,"
                                              "lambda_sc_id=1"),
    ("Re-ID + L_iam", "lambda_iam=1,lambda_sp=0,lambda_rec=0"),
    ("+ L_sp", "lambda_iam=1,lambda_sp=0.5,lambda_rec=0"),
    ("+ L_rec (full ReText)", "lambda_iam=1,lambda_sp=0.5,lambda_rec=0.5"),
]


def run(overrides: str, seed: int, steps: int, cache: str, workroot: str) -> dict:
  wd = os.path.join(workroot, f"{abs(hash(overrides))}_{seed}")
  cmd = [sys.executable, "-m", "retext_jax.main",
         f"--config=configs/retext.py:demo,steps={steps},seed={seed},{overrides}",
         f"--workdir={wd}", f"--config.data.cache_dir={cache}",
         f"--config.eval_every={steps}", f"--config.checkpoint_every={steps}"]
  subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  with open(os.path.join(wd, "results.json")) as f:
    return json.load(f)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
  ap.add_argument("--steps", type=int, default=300)
  ap.add_argument("--rows", type=int, nargs="+", default=list(range(1, len(ROWS) + 1)))
  ap.add_argument("--cache", default=os.path.expanduser("~/.cache/retext_jax/synthetic"))
  ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "ablation.json"))
  args = ap.parse_args()
  rows = []
  with tempfile.TemporaryDirectory() as workroot:
    for i in args.rows:
      name, overrides = ROWS[i - 1]
      results = [run(overrides, s, args.steps, args.cache, workroot) for s in args.seeds]
      final = [r["evals"]["reid"]["synthetic_target"] for r in results]
      start = [r["initial"]["reid"]["synthetic_target"] for r in results]
      row = {"row": i, "name": name, "overrides": overrides, "seeds": args.seeds,
             "steps": args.steps}
      for key in ("mAP", "R1"):
        row[key] = [f[key] for f in final]
        row[f"{key}_step0"] = [s[key] for s in start]
      rows.append(row)
      print(f"row {i} done: mAP {np.mean(row['mAP']):.3f}", flush=True)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(rows, f, indent=2)
  pct = lambda v: f"{100 * np.mean(v):.1f} ± {100 * np.std(v):.1f}"
  print("\n| row | training signals | target mAP (%) | target rank-1 (%) | step-0 mAP (%) |"
        "\n|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['row']} | {r['name']} | {pct(r['mAP'])} | {pct(r['R1'])} "
          f"| {pct(r['mAP_step0'])} |")
  print(f"\n{len(args.seeds)} seeds ({args.seeds}), {args.steps} steps each; mean ± std.")


if __name__ == "__main__":
  main()
