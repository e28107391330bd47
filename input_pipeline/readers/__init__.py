"""Readers for the real on-disk Re-ID datasets; importing this package registers them all.

Each reader is `reader(root: str, **options) -> ReIDDataset`, found by name through
`input_pipeline.registry.get_dataset(name, root, **options)`:

  market1501, dukemtmcreid, occluded_duke,
  cuhk03_np, cuhksysu                             (Market layout; market_style.py)
  msmt17                                          (list files, V1/V2; msmt17.py)
  cuhk02, grid, prid, viper, ilids                (Protocol-1; small_targets.py)
  synthpedes, cuhkpedes, icfgpedes, rstpreid      (captioned; captioned.py)
  custom                                          (your CSV/JSON list; custom.py)

`root` is the dataset folder itself or its conventional parent (torchreid/BAU/IRRA layouts); a
layout error shows the expected layout and every path searched. Conventions: training ids are
relabelled 0..N-1 through the sorted id list, query/gallery/test ids stay raw, camids are 0-based
(-1 where unknown), paths absolute, `Record.dataset` is the registry name. `combineall=True`
(market1501, dukemtmcreid, cuhk03_np, cuhksysu, msmt17, cuhk02) is the domain-generalisation
usage that merges every image into train. Every reader also takes `captions=<sidecar.json>`
(`input_pipeline.captions_sidecar`), which attaches generated captions to its records.

Skips: where dropping data is the documented policy (empty captions; images left without a
caption), readers log one warning per reason and attach `dataset.skipped`, a dict reason -> count
(always present, {} when nothing was dropped); `common.skipped(ds)` reads it. Everything else that
is wrong with the data raises `common.LayoutError` (a `retext_jax.errors.MissingFileError`, so a
FileNotFoundError) or `common.AnnotationError` (a `retext_jax.errors.DataError`, so a ValueError)
naming the file, line/entry and field; reader options out of range raise `errors.ConfigError`.

Readers never import TensorFlow.
"""

from input_pipeline.readers import captioned, custom, market_style, msmt17, small_targets
from input_pipeline.readers.common import AnnotationError, LayoutError, skipped

__all__ = [
    "AnnotationError",
    "LayoutError",
    "captioned",
    "custom",
    "market_style",
    "msmt17",
    "skipped",
    "small_targets",
]
