r"""Ablations on the synthetic benchmark: which training signal buys accuracy, per method.

  python benchmarks/ablation.py                                  # ReText, Figure 1 (5 seeds)
  python benchmarks/ablation.py --config clip_scgi --seeds 0 1 2 --steps 400

ReText rows, the paper's Figure 1 (each adds one signal to the row above):
  1. Re-ID only on the multi-camera source;
  2. + the captioned single-camera images with their identity labels, no text (an ID loss);
  3. + text: L_iam replaces that ID loss (identity-aware image-text matching: the same images
     and labels, now with captions);
  4. + L_sp;
  5. + L_rec (full ReText).
CLIP-SCGI rows: the CLIP-ReID-style baseline (ID + triplet), + CGI, + CFF, both (full).
Each row is trained from scratch per seed with the method's `--preset`; the same seeds give
every row the same initialisation and batches, so rows are compared pairwise: per seed, the row
minus the row above, with the mean difference and its 95 % t-interval over seeds. Prints a
markdown table, writes benchmarks/results/ablation[_<config>].json and a chart (--png).
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
ROWS = {
    "retext": [
        ("Re-ID only (multi-camera)", "lambda_iam=0,lambda_sp=0,lambda_rec=0,lambda_sc_id=0"),
        ("+ captioned images, no text (ID loss)", "lambda_iam=0,lambda_sp=0,lambda_rec=0,"
                                                  "lambda_sc_id=1"),
        ("+ text: L_iam instead of that ID loss", "lambda_iam=1,lambda_sp=0,lambda_rec=0"),
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


def run(config: str, preset: str, overrides: str, seed: int, steps: int | None, cache: str,
        workroot: str) -> dict:
  wd = os.path.join(workroot, f"{abs(hash(overrides))}_{seed}")
  steps_arg = f",steps={steps}" if steps else ""
  cmd = [sys.executable, "-m", "retext_jax.main",
         f"--config=configs/{config}.py:{preset}{steps_arg},seed={seed},{overrides}",
         f"--workdir={wd}", f"--config.data.cache_dir={cache}", "--config.eval_every=0",
         "--config.checkpoint_every=100000"]
  with open(wd + ".log", "w") as log:
    proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  if proc.returncode:  # the log lives in a temporary folder: show its end
    with open(wd + ".log") as f:
      raise SystemExit(f"{' '.join(cmd)} failed (rc={proc.returncode}):\n{f.read()[-3000:]}")
  with open(os.path.join(wd, "results.json")) as f:
    return json.load(f)


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
  """(mean, half-width of the `level` t-interval of the mean) over seeds."""
  from scipy import stats

  n = len(values)
  if n < 2:
    return float(np.mean(values)), float("nan")
  half = stats.t.ppf(0.5 + level / 2, n - 1) * np.std(values, ddof=1) / np.sqrt(n)
  return float(np.mean(values)), float(half)


def paired(rows: list[dict], target: str, key: str) -> list[dict | None]:
  """Per row, its difference from the row above over the same seeds (None for the first)."""
  out = [None]
  for prev, row in zip(rows, rows[1:], strict=False):
    now, before = row["targets"][target][key], prev["targets"][target][key]
    diff = 100 * (np.asarray(now) - np.asarray(before))
    mean, half = interval(diff)
    out.append({"mean": mean, "ci95": half, "diffs": diff.tolist()})
  return out


def plot(rows: list[dict], target: str, out: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
  x = np.arange(len(rows))
  for ax, key in zip(axes, ("mAP", "R1"), strict=True):
    stats_ = [interval(100 * np.asarray(r["targets"][target][key])) for r in rows]
    ax.bar(x, [m for m, _ in stats_], yerr=[h for _, h in stats_], capsize=4, color="#8fb3d9")
    for i, r in enumerate(rows):
      vals = 100 * np.asarray(r["targets"][target][key])
      ax.plot(np.full(len(vals), i) + np.linspace(-0.15, 0.15, len(vals)), vals, "k.", ms=4)
    for i, d in enumerate(paired(rows, target, key)):
      if d is not None:
        ax.annotate(f"{d['mean']:+.1f}\n±{d['ci95']:.1f}", (i, 0), xytext=(0, 4),
                    textcoords="offset points", ha="center", fontsize=7)
    ax.set_xticks(x, [f"{r['row']}" for r in rows])
    ax.set_xlabel("row (see table); annotation: paired difference to the row before, 95% CI")
    ax.set_ylabel(f"target {key} (%)")
    ax.grid(axis="y", alpha=0.3)
  fig.suptitle(f"{target}: mean over {len(rows[0]['seeds'])} seeds, 95% t-intervals")
  fig.tight_layout()
  fig.savefig(out, dpi=110)


def _kept_rows(out: str, args) -> list[dict]:
  """With --rows, the other rows of an earlier run of the same preset, seeds and steps are kept,
  so rows can be added one run at a time."""
  if not args.rows or not os.path.exists(out):
    return []
  with open(out) as f:
    saved = json.load(f)
  rows = saved["rows"] if isinstance(saved, dict) else []  # older files: a bare list of rows
  same = [r for r in rows if r["seeds"] == args.seeds and r["preset"] == args.preset
          and (args.steps is None or r["steps"] == args.steps)]
  return [r for r in same if r["row"] not in args.rows]


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--config", default="retext", choices=sorted(ROWS))
  ap.add_argument("--preset", default="demo", help="the config preset every row starts from")
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
  ap.add_argument("--steps", type=int, help="training steps (default: the preset's)")
  ap.add_argument("--rows", type=int, nargs="+")
  ap.add_argument("--cache", default=os.path.expanduser("~/.cache/retext_jax/synthetic"))
  ap.add_argument("--out")
  ap.add_argument("--png", help="chart of the first target (default docs/ablation_<config>.png)")
  ap.add_argument("--report", action="store_true",
                  help="only print the table and redraw the chart from --out's JSON")
  args = ap.parse_args()
  table = ROWS[args.config]
  out = args.out or os.path.join(ROOT, "benchmarks", "results", f"ablation_{args.config}.json")
  png = args.png or os.path.join(ROOT, "docs", f"ablation_{args.config}.png")
  if args.report:
    with open(out) as f:
      saved = json.load(f)
    report(saved["rows"], out, png)
    return
  rows = _kept_rows(out, args)
  with tempfile.TemporaryDirectory() as workroot:
    for i in args.rows or range(1, len(table) + 1):
      name, overrides = table[i - 1]
      t0 = time.perf_counter()
      results = [run(args.config, args.preset, overrides, s, args.steps, args.cache, workroot)
                 for s in args.seeds]
      targets = [t for t in results[0]["evals"]["reid"] if t != "average"]
      row = {"row": i, "name": name, "overrides": overrides, "seeds": args.seeds,
             "preset": args.preset, "steps": results[0]["step"], "targets": {},
             "wall_s_per_run": (time.perf_counter() - t0) / len(args.seeds)}
      for t in targets:
        final = [r["evals"]["reid"][t] for r in results]
        row["targets"][t] = {"mAP": [f["mAP"] for f in final], "R1": [f["R1"] for f in final]}
      rows = sorted([r for r in rows if r["row"] != i] + [row], key=lambda r: r["row"])
      print(f"row {i} done ({row['wall_s_per_run']:.0f} s per run): " + ", ".join(
          f"{t} mAP {np.mean(v['mAP']):.3f}" for t, v in row["targets"].items()), flush=True)
  report(rows, out, png)


def report(rows: list[dict], out: str, png: str) -> None:
  """Writes the JSON and the chart, prints one table per target. The wall time is the sum over
  rows (rows added later with --rows included)."""
  wall_s = sum(r["wall_s_per_run"] * len(r["seeds"]) for r in rows)
  targets = list(rows[0]["targets"])
  comparisons = {t: {k: paired(rows, t, k) for k in ("mAP", "R1")} for t in targets}
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump({"rows": rows, "paired_with_previous_row": comparisons, "wall_s": wall_s}, f,
              indent=2)
  plot(rows, targets[0], png)

  def pct(v):
    return f"{100 * np.mean(v):.1f} ± {100 * np.std(v):.1f}"

  def delta(d):
    return "" if d is None else f"{d['mean']:+.1f} [{d['mean'] - d['ci95']:+.1f}, " \
                                f"{d['mean'] + d['ci95']:+.1f}]"

  for t in targets:
    print(f"\n{t}: mean ± std over seeds; Δ = paired difference to the row above, mean "
          "[95 % t-interval]")
    print("| row | training signals | mAP (%) | Δ mAP | R1 (%) | Δ R1 |")
    print("|---|---|---|---|---|---|")
    for j, r in enumerate(rows):
      v = r["targets"][t]
      print(f"| {r['row']} | {r['name']} | {pct(v['mAP'])} | {delta(comparisons[t]['mAP'][j])} "
            f"| {pct(v['R1'])} | {delta(comparisons[t]['R1'][j])} |")
  r = rows[0]
  print(f"\n{len(r['seeds'])} seeds ({r['seeds']}), preset {r['preset']}, {r['steps']} steps; "
        f"{wall_s / 60:.0f} min of training in all. Wrote {out} and {png}.")


if __name__ == "__main__":
  main()
