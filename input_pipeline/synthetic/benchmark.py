"""Public API: render the benchmark, or make sure a cached copy matches what is asked for."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import shutil

from tqdm import tqdm

from input_pipeline.synthetic.contact_sheet import make_contact_sheet
from input_pipeline.synthetic.presets import get_preset
from input_pipeline.synthetic.render import render_job
from input_pipeline.synthetic.writer import (
    CUHK_DIR,
    MARKET_DOMAINS,
    SYNTH_DIR,
    make_plan,
    manifest,
)

MANIFEST = "manifest.json"
_OWNED = tuple(folder for _, folder in MARKET_DOMAINS) + (SYNTH_DIR, CUHK_DIR)


def _dump(obj: object, path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, sort_keys=True, indent=1, ensure_ascii=True)
    f.write("\n")


def expected_manifest(preset: str = "demo", seed: int = 0,
                      caption_error_rate: float | None = None) -> dict:
  """The manifest `render_benchmark` would write, computed without rendering a pixel."""
  p = get_preset(preset)
  rate = p.caption_error_rate if caption_error_rate is None else float(caption_error_rate)
  # Through JSON, as the file would be read back (tuples become lists).
  return json.loads(json.dumps(manifest(p, seed, rate, make_plan(p, seed, rate))))


def render_benchmark(out_dir: str, preset: str = "demo", seed: int = 0,
                     caption_error_rate: float | None = None, workers: int | None = None,
                     progress: bool = True) -> dict:
  """Renders the whole benchmark into `out_dir` and returns its manifest.

  The same (preset, seed, caption_error_rate) gives byte-identical files whatever `workers` is.
  The manifest is written last, so a crashed render is never mistaken for a finished one.
  """
  p = get_preset(preset)
  rate = p.caption_error_rate if caption_error_rate is None else float(caption_error_rate)
  plan = make_plan(p, seed, rate)
  os.makedirs(out_dir, exist_ok=True)
  man_path = os.path.join(out_dir, MANIFEST)
  if os.path.exists(man_path):
    os.remove(man_path)
  for folder in _OWNED:  # stale images of another preset/seed must not linger
    shutil.rmtree(os.path.join(out_dir, folder), ignore_errors=True)
  n_workers = p.workers if workers is None else workers
  n_workers = max(1, min(n_workers, os.cpu_count() or 1))
  job_fn = functools.partial(render_job, root=out_dir)
  bar = tqdm(total=len(plan.jobs), desc=f"rendering {preset}", unit="img", disable=not progress)
  if n_workers == 1:
    for job in plan.jobs:
      job_fn(job)
      bar.update()
  else:
    # spawn, not fork: the caller may be a trainer with JAX/TF threads running.
    with multiprocessing.get_context("spawn").Pool(n_workers) as pool:
      for _ in pool.imap_unordered(job_fn, plan.jobs, chunksize=16):
        bar.update()
  bar.close()
  for rel, content in plan.json_files.items():
    _dump(content, os.path.join(out_dir, rel))
  make_contact_sheet(out_dir, plan.sheet_rows, os.path.join(out_dir, "contact_sheet.png"))
  result = manifest(p, seed, rate, plan)
  _dump(result, man_path)
  return result


def ensure_benchmark(cache_dir: str, preset: str = "demo", seed: int = 0,
                     caption_error_rate: float | None = None) -> str:
  """Returns `cache_dir`, rendering into it first unless its manifest already matches."""
  want = expected_manifest(preset, seed, caption_error_rate)
  man_path = os.path.join(cache_dir, MANIFEST)
  if os.path.exists(man_path):
    try:
      with open(man_path, encoding="utf-8") as f:
        if json.load(f) == want:
          return cache_dir
    except (OSError, json.JSONDecodeError):
      pass  # unreadable manifest: render again
  render_benchmark(cache_dir, preset, seed, caption_error_rate)
  return cache_dir
