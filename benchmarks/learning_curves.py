r"""Learning curves of the ReText demo: in-domain (source test split), unseen-target and
text-to-image mAP over training, for the demo recipe, variants that each undo one of its
choices, and the recipe it replaced.

  python benchmarks/learning_curves.py                      # all variants, seed 0
  python benchmarks/learning_curves.py --variants demo original --eval-every 50

Each variant trains `configs/retext.py:demo` plus its overrides from scratch, evaluating every
`--eval-every` steps (results.json keeps the history). Under-fitting shows as both curves low
and still rising; over-fitting the source as the in-domain curve rising while the target falls.
Prints a table, writes benchmarks/results/learning_curves.json and docs/learning_curves.png
(with the raw-pixel baseline of benchmarks/synthetic_baselines.py drawn for reference).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name -> (description, overrides of the demo preset as --config.* flags)
VARIANTS = {
    "demo": ("the demo recipe", {}),
    "no_camera_jitter": ("without the random camera response", {"input.camera_jitter": "0.0"}),
    "class_token_matching": ("matching embeddings from the class token, not the BNNeck feature",
                             {"model.match_feature": "cls"}),
    "original": ("the recipe before: 16x16 patch embedding, no camera response, class-token "
                 "matching, MiniLM at the full rate",
                 {"model.stem": "patch", "input.camera_jitter": "0.0",
                  "model.match_feature": "cls", "optim.lr_mults.text_encoder": "1.0"}),
}
CURVES = (("in_domain", "synthetic_source", "source test split (in-domain)"),
          ("reid", "synthetic_target", "unseen target domain"),
          ("t2i", "synthetic_captions_test", "text-to-image (captioned test split)"))


def run(name: str, overrides: dict, seed: int, eval_every: int, cache: str,
        workroot: str) -> dict:
  wd = os.path.join(workroot, name)
  cmd = [sys.executable, "-m", "retext_jax.main", f"--config=configs/retext.py:demo,seed={seed}",
         f"--workdir={wd}", f"--config.data.cache_dir={cache}",
         f"--config.eval_every={eval_every}"]
  cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
  start = time.perf_counter()
  log_path = os.path.join(workroot, f"{name}.log")
  with open(log_path, "w") as log:
    proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  if proc.returncode:  # the log lives in a temporary folder: show its end
    with open(log_path) as f:
      raise SystemExit(f"{' '.join(cmd)} failed (rc={proc.returncode}):\n{f.read()[-3000:]}")
  with open(os.path.join(wd, "results.json")) as f:
    history = json.load(f)["history"]
  curves = {ev: {"steps": [h["step"] for h in history],
                 "mAP": [h["evals"][ev][t]["mAP"] for h in history],
                 "R1": [h["evals"][ev][t]["R1"] for h in history]} for ev, t, _ in CURVES}
  return {"wall_s": time.perf_counter() - start, "curves": curves}


def plot(rows: dict, baselines: dict, out: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(CURVES), figsize=(15, 4), sharey=True)
  for ax, (ev, _, title) in zip(axes, CURVES, strict=True):
    for name, r in rows.items():
      c = r["curves"][ev]
      ax.plot(c["steps"], [100 * v for v in c["mAP"]], marker="o", ms=3, label=name)
    if ev in baselines:
      ax.axhline(baselines[ev], color="k", ls="--", lw=1, label="raw pixels 32x16")
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("mAP (%)")
  axes[-1].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out, dpi=110)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--eval-every", type=int, default=100)
  ap.add_argument("--cache", default=os.path.expanduser("~/.cache/retext_jax/synthetic"))
  ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                "learning_curves.json"))
  ap.add_argument("--png", default=os.path.join(ROOT, "docs", "learning_curves.png"))
  args = ap.parse_args()
  rows = {}
  with tempfile.TemporaryDirectory() as workroot:
    for name in args.variants:
      rows[name] = run(name, VARIANTS[name][1], args.seed, args.eval_every, args.cache, workroot)
      print(f"{name} done in {rows[name]['wall_s']:.0f} s", flush=True)
  baselines = {}
  path = os.path.join(ROOT, "benchmarks", "results", "synthetic_baselines.json")
  if os.path.exists(path):
    with open(path) as f:
      domains = json.load(f)["domains"]
    baselines = {"in_domain": domains["source_market"]["raw pixels 32x16"]["mAP"],
                 "reid": domains["target_market"]["raw pixels 32x16"]["mAP"]}
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"seed": args.seed, "variants": {n: {"description": VARIANTS[n][0],
                                                   "overrides": VARIANTS[n][1], **r}
                                               for n, r in rows.items()}}, f, indent=1)
  plot(rows, baselines, args.png)
  steps = rows[args.variants[0]]["curves"]["reid"]["steps"]
  print("\nmAP (%) in-domain / target / text-to-image at step " + ", ".join(map(str, steps)))
  for name, r in rows.items():
    points = zip(*(r["curves"][ev]["mAP"] for ev, _, _ in CURVES), strict=True)
    print(f"| {name} | " + " | ".join(" / ".join(f"{100 * v:.1f}" for v in p) for p in points)
          + f" | {r['wall_s']:.0f} s |")
  print(f"\nwrote {args.out} and {args.png}")


if __name__ == "__main__":
  main()
