r"""Evaluates a trained checkpoint on a standard protocol; writes the table as markdown and JSON.

  python -m retext_jax.tools.evaluate_protocol --workdir workdirs/retext --protocol p1 \
      --data_root /data/reid
  python -m retext_jax.tools.evaluate_protocol --workdir workdirs/demo --protocol synthetic

Protocols (retext_jax/protocols.py): p1 (-> PRID, GRID, VIPeR, iLIDS, mean of 10 splits each),
p2_m / p2_ms / p2_c3 and p3_* (leave-one-out among Market-1501, MSMT17, CUHK-SYSU, CUHK03),
m_to_ms, ms_to_m, m_to_d, d_to_m (single source), sup_market1501 / sup_msmt17 /
sup_dukemtmcreid / sup_occluded_duke (supervised), t2i_cuhkpedes / t2i_icfgpedes / t2i_rstpreid
(text-to-image), synthetic, synthetic_t2i and synthetic_supervised (the synthetic benchmark;
--data_root defaults to the folder the training config rendered), custom and custom_t2i (your
own folder read by the `custom` reader: its query/gallery splits, its captioned test split;
--data_root is that folder, by default the one the model was trained on with data=DIR). Writes
<out>/<protocol>.md and .json (default out: <workdir>/protocols); the JSON holds every split's
metrics and the CMC curves `plot_cmc` reads.
"""

from __future__ import annotations

import json
import os
import sys

from retext_jax import errors, protocols
from retext_jax.tools import common


def _data_root(args, trained) -> str:
  if args.data_root:
    return os.path.expanduser(args.data_root)
  if args.protocol.startswith("custom"):
    if not trained.config.data.get("custom"):
      raise errors.ConfigError("--data_root is required: give your annotated folder (the model "
                               "was not trained with data=DIR, so there is no default)")
    return trained.config.data.custom
  if args.protocol.startswith("synthetic"):
    from retext_jax import data

    if not trained.config.data.synthetic_preset:
      raise errors.ConfigError("--data_root is required: the model was not trained on the "
                               "synthetic benchmark, so there is no default folder")
    return data.data_root(trained.config)
  raise errors.ConfigError(f"--data_root is required for protocol {args.protocol} (the parent "
                           "folder of the dataset folders)")


def main(argv: list[str] | None = None) -> int:
  return common.run(_main, argv)


def _main(argv: list[str] | None) -> int:
  p = common.parser("evaluate_protocol", __doc__)
  common.add_model_args(p)
  p.add_argument("--protocol", required=True, choices=list(protocols.PROTOCOLS))
  p.add_argument("--data_root", help="parent of the dataset folders")
  p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (k1=20, k2=6, "
                 "lambda=0.3)")
  p.add_argument("--max_rank", type=int, default=50, help="length of the stored CMC curves")
  p.add_argument("--out", help="output folder (default <workdir>/protocols)")
  args = p.parse_args(argv)
  trained = common.load_model(args)
  results = protocols.run(trained, args.protocol, _data_root(args, trained), args.batch_size,
                          args.rerank, args.max_rank)
  out = args.out or os.path.join(trained.workdir, "protocols")
  os.makedirs(out, exist_ok=True)
  stem = os.path.join(out, args.protocol + ("_rerank" if args.rerank else ""))
  table = protocols.markdown([results])
  with open(stem + ".json", "w") as f:
    json.dump(results, f, indent=2)
  with open(stem + ".md", "w") as f:
    f.write(table)
  print(table)
  print(f"wrote {stem}.md and {stem}.json")
  return 0


if __name__ == "__main__":
  sys.exit(main())
