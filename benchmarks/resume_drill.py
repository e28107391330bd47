"""Kill -9 / resume drill: is a preempted run the same as one that was not preempted?

    python benchmarks/resume_drill.py                 # N=10 on the tiny preset (~25 min, 2 cores)
    python benchmarks/resume_drill.py -n 3 --steps 12

One uninterrupted run gives the reference and its timing: when its first checkpoint appeared
and when it ended. Then, N times: the same command in a fresh workdir, SIGKILL at a random moment
after that run's own first checkpoint (0 to the reference's remaining time later, so every drill
has a checkpoint to resume from whatever else loads the machine), the same command again until
it finishes. Each
drill counts as resumed (the second run finished), exact (its final metrics equal the
reference's to 1e-6) and corrupt (a checkpoint could not be read). Prints a table and writes
benchmarks/results/resume_drill.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(workdir: str, steps: int, every: int, cache: str) -> list[str]:
  return [sys.executable, "-m", "retext_jax.main",
          f"--config=configs/retext.py:tiny,steps={steps}", f"--workdir={workdir}",
          f"--config.checkpoint_every={every}", f"--config.eval_every={steps}",
          f"--config.data.cache_dir={cache}"]


def checkpoint_steps(workdir: str) -> list[int]:
  folder = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(folder) if d.isdigit()) if os.path.isdir(folder) else []


def finish(cmd: list[str], workdir: str, log: str) -> tuple[float, float, str]:
  """Runs `cmd` to the end; (seconds to its first checkpoint, seconds in all, stderr). A
  failure prints the end of its log."""
  t0 = time.perf_counter()
  first = None
  with tempfile.TemporaryFile("w+") as err:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True)
    while proc.poll() is None:
      if first is None and checkpoint_steps(workdir):
        first = time.perf_counter() - t0
      time.sleep(0.2)
    total = time.perf_counter() - t0
    err.seek(0)
    stderr = err.read()
  with open(log, "a") as f:
    f.write(stderr)
  if proc.returncode:
    raise SystemExit(f"run failed (exit {proc.returncode}):\n{stderr[-3000:]}")
  return total if first is None else first, total, stderr


def final_metrics(workdir: str) -> dict:
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)["evals"]


def max_gap(a: dict, b: dict) -> float:
  """Largest absolute difference between two nested metric dicts (inf if keys differ)."""
  if isinstance(a, dict):
    if not isinstance(b, dict) or a.keys() != b.keys():
      return float("inf")
    return max((max_gap(a[k], b[k]) for k in a), default=0.0)
  return abs(float(a) - float(b))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("-n", type=int, default=10, help="kill/resume drills")
  ap.add_argument("--steps", type=int, default=30)
  ap.add_argument("--checkpoint_every", type=int, default=5)
  ap.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
  ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                "resume_drill.json"))
  args = ap.parse_args()
  rng = random.Random(args.seed)
  tmp = tempfile.mkdtemp(prefix="resume_drill_")
  cache, log = os.path.join(tmp, "cache"), os.path.join(tmp, "runs.log")
  try:
    ref_dir = os.path.join(tmp, "reference")
    first_s, ref_s, _ = finish(command(ref_dir, args.steps, args.checkpoint_every, cache),
                               ref_dir, log)
    reference = final_metrics(ref_dir)
    rows = []
    for i in range(args.n):
      wd = os.path.join(tmp, f"drill_{i}")
      cmd = command(wd, args.steps, args.checkpoint_every, cache)
      t0 = time.perf_counter()
      proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
      while proc.poll() is None and not checkpoint_steps(wd):
        time.sleep(0.2)
      try:
        proc.wait(timeout=rng.uniform(0, ref_s - first_s))
        killed = False  # finished before the kill moment
      except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = True
      kill_at = time.perf_counter() - t0
      steps = checkpoint_steps(wd)
      _, _, err = finish(cmd, wd, log)
      gap = max_gap(final_metrics(wd), reference)
      rows.append({"drill": i, "kill_after_s": round(kill_at, 1), "killed": killed,
                   "checkpoints_at_kill": steps,
                   "resumed_from": max(steps) if steps and "resumed from" in err else 0,
                   "finished": True, "exact": gap <= 1e-6, "max_metric_gap": gap,
                   "unreadable_checkpoints": err.count("checkpoint unreadable")})
      r = rows[-1]
      print(f"drill {i}: killed after {r['kill_after_s']} s at checkpoints {steps}, resumed "
            f"from step {r['resumed_from']}, exact={r['exact']} (gap {gap:.1e}), "
            f"unreadable={r['unreadable_checkpoints']}", flush=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  n = len(rows)
  resumed = sum(r["resumed_from"] > 0 for r in rows)
  summary = {"drills": n, "finished": sum(r["finished"] for r in rows),
             "resumed_from_a_checkpoint": resumed, "exact": sum(r["exact"] for r in rows),
             "runs_with_unreadable_checkpoints": sum(r["unreadable_checkpoints"] > 0
                                                     for r in rows),
             "reference_seconds": ref_s, "reference_first_checkpoint_seconds": first_s}
  print("\n| drills | finished | resumed from a checkpoint | exact | unreadable checkpoints |")
  print("|---|---|---|---|---|")
  print(f"| {n} | {summary['finished']}/{n} | {resumed}/{n} | {summary['exact']}/{n} | "
        f"{summary['runs_with_unreadable_checkpoints']} |")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"summary": summary, "steps": args.steps,
               "checkpoint_every": args.checkpoint_every, "rows": rows}, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
