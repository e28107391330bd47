"""CLI: python -m input_pipeline.synthetic --out DIR --preset demo|tiny --seed N."""

from __future__ import annotations

import argparse
import json
import time

from input_pipeline.synthetic.benchmark import render_benchmark
from input_pipeline.synthetic.presets import PRESETS


def main(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser(prog="python -m input_pipeline.synthetic", description=__doc__)
  ap.add_argument("--out", required=True, help="output folder (its benchmark folders are replaced)")
  ap.add_argument("--preset", default="demo", choices=sorted(PRESETS))
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--caption-error-rate", type=float, default=None,
                  help="fraction of SYNTH-PEDES captions with one VLM-like error (preset default)")
  ap.add_argument("--workers", type=int, default=None, help="render processes (preset default)")
  args = ap.parse_args(argv)
  start = time.perf_counter()
  man = render_benchmark(args.out, args.preset, args.seed, args.caption_error_rate, args.workers)
  print(json.dumps(man["sets"], indent=1, sort_keys=True))
  print(f"{man['images']} images in {time.perf_counter() - start:.1f} s -> {args.out}")


if __name__ == "__main__":
  main()
