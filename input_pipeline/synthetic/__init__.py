"""The synthetic pedestrian benchmark: rendered multi-camera Re-ID domains and captioned sets,
written in the real Market-1501, SYNTH-PEDES and CUHK-PEDES layouts (see writer.py).

  python -m input_pipeline.synthetic --out DIR --preset demo|tiny --seed 0
"""

from input_pipeline.synthetic.benchmark import ensure_benchmark, expected_manifest, render_benchmark
from input_pipeline.synthetic.presets import PRESETS, Preset, get_preset

__all__ = ["PRESETS", "Preset", "ensure_benchmark", "expected_manifest", "get_preset",
           "render_benchmark"]
