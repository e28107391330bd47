r"""Plots CMC curves from protocol results (`tools.evaluate_protocol` JSON files) as a PNG.

  python -m retext_jax.tools.plot_cmc --results workdirs/a/protocols/synthetic.json \
      workdirs/b/protocols/synthetic.json --labels ReText baseline --out cmc.png

One panel per target, one curve per results file (rank 1 to --max_rank, in percent).
"""

from __future__ import annotations

import json
import os
import sys

from retext_jax import errors
from retext_jax.tools import common


def load_results(path: str) -> dict:
  if not os.path.isfile(path):
    raise errors.MissingFileError(f"results file {path} does not exist")
  with open(path) as f:
    try:
      res = json.load(f)
    except json.JSONDecodeError as e:
      raise errors.DataError(f"{path} is not JSON ({e}): expected the file written by "
                             "python -m retext_jax.tools.evaluate_protocol") from None
  targets = res.get("targets") if isinstance(res, dict) else None
  if not isinstance(targets, dict) or not targets or not all(
      isinstance(t, dict) and "cmc" in t for t in targets.values()):
    raise errors.DataError(f"{path} holds no CMC curves: expected the JSON written by "
                           "python -m retext_jax.tools.evaluate_protocol")
  return res


def plot(results: list[dict], labels: list[str], out: str, max_rank: int = 20) -> list[str]:
  """Writes the figure; returns the target names (panels) in order."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  targets = list(dict.fromkeys(t for r in results for t in r["targets"]))
  fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 3.6), squeeze=False)
  for ax, target in zip(axes[0], targets, strict=True):
    for res, label in zip(results, labels, strict=True):
      if target not in res["targets"]:
        continue
      cmc = res["targets"][target]["cmc"][:max_rank]
      ranks = range(1, len(cmc) + 1)
      ax.plot(ranks, [100 * c for c in cmc], marker="o", markersize=3, label=label)
    ax.set(title=target, xlabel="rank", ylabel="matching rate (%)", ylim=(0, 100),
           xlim=(1, max_rank))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=120)
  plt.close(fig)
  return targets


def main(argv: list[str] | None = None) -> int:
  return common.run(_main, argv)


def _main(argv: list[str] | None) -> int:
  p = common.parser("plot_cmc", __doc__)
  p.add_argument("--results", nargs="+", required=True, help="evaluate_protocol JSON files")
  p.add_argument("--labels", nargs="+", help="curve labels (default: model name and step)")
  p.add_argument("--max_rank", type=int, default=20)
  p.add_argument("--out", required=True, help="output PNG")
  args = p.parse_args(argv)
  results = [load_results(r) for r in args.results]
  labels = args.labels or [f"{r['model']} step {r['step']}" for r in results]
  if len(labels) != len(results):
    p.error(f"{len(labels)} --labels for {len(results)} --results")
  targets = plot(results, labels, args.out, args.max_rank)
  print(f"wrote {args.out}: CMC of {len(results)} model(s) on {', '.join(targets)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
