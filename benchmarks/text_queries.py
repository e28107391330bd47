"""Do text queries find the people they describe? Attribute queries on the unseen target domain.

For every garment colour in the synthetic palette, the query "a person wearing a {colour} {item}"
(item = shirt for the upper garment, trousers for the lower one) ranks the target gallery by
image-text matching score; the figure is the area under the ROC curve of that ranking for the
images whose identity wears that colour (0.5 = chance, 1 = every such image above every other).

  python benchmarks/text_queries.py --workdir workdirs/demo

Needs a model trained on the synthetic benchmark (its config names the rendered folder).
Prints a table and writes JSON (default benchmarks/results/text_queries.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from input_pipeline.registry import get_dataset  # noqa: E402
from input_pipeline.synthetic.attributes import COLOURS  # noqa: E402
from retext_jax import data, inference  # noqa: E402

QUERIES = (("upper_colour", "shirt"), ("lower_colour", "trousers"))


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
  """P(score of a positive > score of a negative), ties counted half."""
  pos, neg = scores[positive], scores[~positive]
  return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                               "text_queries.json"))
  args = p.parse_args()
  trained = inference.load(args.workdir)
  root = os.path.join(data.data_root(trained.config), "target_market")
  with open(os.path.join(root, "identities.json")) as f:
    identities = json.load(f)["identities"]
  gallery = [r for r in get_dataset("market1501", root).gallery if r.pid > 0]
  g = trained.embed_records(gallery, "matching", progress="gallery")
  attrs = [identities[f"{pid:04d}"]["attributes"] for pid in g.pids]
  rows = []
  for field, item in QUERIES:
    for colour in COLOURS:
      positive = np.array([a[field] == colour for a in attrs])
      if not positive.any() or positive.all():
        continue
      text = f"a person wearing a {colour} {item}"
      scores = g.feats @ trained.text_embeddings([text])[0]
      rows.append({"query": text, "images": int(positive.sum()), "auc": auc(scores, positive)})
  mean = float(np.mean([r["auc"] for r in rows]))
  print(f"{'query':<42} {'images':>6} {'AUC':>6}")
  for r in rows:
    print(f"{r['query']:<42} {r['images']:>6} {r['auc']:6.3f}")
  print(f"{'mean over ' + str(len(rows)) + ' queries':<42} {len(g.pids):>6} {mean:6.3f}")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"workdir": trained.workdir, "step": trained.step, "model": trained.config.name,
               "gallery_images": len(g.pids), "mean_auc": mean, "queries": rows}, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
