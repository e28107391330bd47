r"""Ablations on the synthetic benchmark: which training signal buys accuracy, per method.

  python benchmarks/ablation.py --seeds 0 1 --steps 300                  # ReText, unseen target
  python benchmarks/ablation.py --config clip_scgi --seeds 0 1 2         # CLIP-SCGI, supervised

ReText rows (each adds one signal to the row above, except row 2, the no-text control of row 3):
  1. Re-ID only on the multi-camera source;
  2. + captioned images without text (an ID loss over the captioned set's identities);
  3. Re-ID + L_iam (image-text matching on the captioned set);
  4. + L_sp;
  5. + L_rec (full ReText).
CLIP-SCGI rows: the CLIP-ReID-style baseline (ID + triplet), + CGI, + CFF, both (full).
Each row is trained from scratch per seed with the method's `demo` preset; the table gives, per
evaluated target, mAP / rank-1 mean and standard deviation over seeds, and the step-0
(untrained) mAP. Writes benchmarks/results/ablation[_<config>].json and prints a markdown table.
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
ROWS = {
    "retext": [
        ("Re-ID only (multi-camera)", "lambda_iam=0,lambda_sp=0,lambda_rec=0,lambda_sc_id=0"),
        ("+ captioned images, no text (ID loss)", "lambda_iam=0,lambda_sp=0,lambda_rec=0,"
                                                  "lambda_sc_id=1"),
        ("Re-ID + L_iam", "lambda_iam=1,lambda_sp=0,lambda_rec=0"),
        ("+ L_sp", "lambda_iam=1,lambda_sp=0.5,lambda_rec=0"),
        ("+ L_rec (full ReText)", "lambda_iam=1,lambda_sp=0.5,lambda_rec=0.5"),
    ],
    "clip_scgi": [
        ("CLIP-ReID-style baseline (ID + triplet)", "cgi=0,cff=0"),
        ("+ CGI", "cgi=1,cff=0"),
        ("+ CFF", "cgi=0,cff=1"),
        ("+ CGI + CFF (full CLIP-SCGI)", "cgi=1,cff=1"),
    ],
}


def run(config: str, overrides: str, seed: int, steps: int, cache: str, workroot: str) -> dict:
  wd = os.path.join(workroot, f"{abs(hash(overrides))}_{seed}")
  cmd = [sys.executable, "-m", "retext_jax.main",
         f"--config=configs/{config}.py:demo,steps={steps},seed={seed},{overrides}",
         f"--workdir={wd}", f"--config.data.cache_dir={cache}",
         f"--config.eval_every={steps}", f"--config.checkpoint_every={steps}"]
  subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  with open(os.path.join(wd, "results.json")) as f:
    return json.load(f)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--config", default="retext", choices=sorted(ROWS))
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
  ap.add_argument("--steps", type=int, default=300)
  ap.add_argument("--rows", type=int, nargs="+")
  ap.add_argument("--cache", default=os.path.expanduser("~/.cache/retext_jax/synthetic"))
  ap.add_argument("--out")
  args = ap.parse_args()
  table = ROWS[args.config]
  suffix = "" if args.config == "retext" else f"_{args.config}"
  out = args.out or os.path.join(ROOT, "benchmarks", "results", f"ablation{suffix}.json")
  rows = []
  with tempfile.TemporaryDirectory() as workroot:
    for i in args.rows or range(1, len(table) + 1):
      name, overrides = table[i - 1]
      results = [run(args.config, overrides, s, args.steps, args.cache, workroot)
                 for s in args.seeds]
      targets = [t for t in results[0]["evals"]["reid"] if t != "average"]
      row = {"row": i, "name": name, "overrides": overrides, "seeds": args.seeds,
             "steps": args.steps, "targets": {}}
      for t in targets:
        final = [r["evals"]["reid"][t] for r in results]
        start = [r["initial"]["reid"][t] for r in results]
        row["targets"][t] = {"mAP": [f["mAP"] for f in final], "R1": [f["R1"] for f in final],
                             "mAP_step0": [s["mAP"] for s in start]}
      rows.append(row)
      print(f"row {i} done: " + ", ".join(
          f"{t} mAP {np.mean(v['mAP']):.3f}" for t, v in row["targets"].items()), flush=True)
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump(rows, f, indent=2)
  pct = lambda v: f"{100 * np.mean(v):.1f} ± {100 * np.std(v):.1f}"
  targets = list(rows[0]["targets"])
  print("\n| row | training signals | " + " | ".join(
      f"{t} mAP (%) | {t} R1 (%)" for t in targets) + " | step-0 mAP (%) |")
  print("|---|---|" + "---|---|" * len(targets) + "---|")
  for r in rows:
    cells = " | ".join(f"{pct(v['mAP'])} | {pct(v['R1'])}" for v in r["targets"].values())
    step0 = " / ".join(pct(v["mAP_step0"]) for v in r["targets"].values())
    print(f"| {r['row']} | {r['name']} | {cells} | {step0} |")
  print(f"\n{len(args.seeds)} seeds ({args.seeds}), {args.steps} steps each; mean ± std.")


if __name__ == "__main__":
  main()
