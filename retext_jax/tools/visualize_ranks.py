"""Draws the top-k gallery matches of a few queries, to see at a glance where a model goes wrong.

  python -m retext_jax.tools.visualize_ranks --workdir workdirs/demo \
      --query_dataset market1501:/data/market1501:query \
      --gallery_dataset market1501:/data/market1501:gallery --out ranks.png --topk 10

One row per query: the query (blue border), then its ranked gallery images with a GREEN border
when they show the query's identity and RED when not, each labelled with its rank and distance.
Rankings follow the Market-1501 protocol: gallery images of the query's identity seen by the
query's camera, and gallery images with id -1 (Market's junk), are left out; id 0 (distractors)
stays in. Queries are drawn at random among those with a true match in the gallery (or given with
`--query_index`). Folders (`--query_images DIR`) take ids and cameras from Market-style names
(`0002_c1s1_...`); where ids are unknown (-1) nothing is removed and the borders are grey.
Re-ranking (`--rerank`) ranks by k-reciprocal distances computed with all queries.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sys

import numpy as np

from retext_jax import errors
from retext_jax.tools import common

BLUE = (30, 90, 220)  # the query
GREEN = (0, 170, 0)  # same identity as the query
RED = (220, 0, 0)  # another identity (or a distractor)
GREY = (150, 150, 150)  # identity unknown
WHITE = (255, 255, 255)  # background
BLACK = (0, 0, 0)  # labels


@dataclasses.dataclass(frozen=True)
class Layout:
  """Geometry of the sheet: cells of an image with a coloured border and a label strip below."""

  image_h: int = 128
  image_w: int = 64
  border: int = 5
  label_h: int = 14
  gap: int = 6  # between cells and around the sheet
  query_sep: int = 12  # extra space between a query and its ranked list

  @property
  def cell_w(self) -> int:
    return self.image_w + 2 * self.border

  @property
  def cell_h(self) -> int:
    return self.image_h + 2 * self.border + self.label_h

  def origin(self, row: int, col: int) -> tuple[int, int]:
    """(x, y) of the top-left border pixel of cell (row, col); column 0 holds the query."""
    x = self.gap + col * (self.cell_w + self.gap) + (self.query_sep if col > 0 else 0)
    return x, self.gap + row * (self.cell_h + self.gap)

  def size(self, rows: int, cols: int) -> tuple[int, int]:
    """(width, height) of a sheet of rows x cols cells."""
    width = self.gap + cols * (self.cell_w + self.gap) + (self.query_sep if cols > 1 else 0)
    return width, self.gap + rows * (self.cell_h + self.gap)


LAYOUT = Layout()


def ranked_gallery(dist_row: np.ndarray, q_pid: int, q_camid: int, g_pids: np.ndarray,
                   g_camids: np.ndarray, ids_known: bool = True) -> np.ndarray:
  """Gallery positions by increasing distance (stable, as the evaluator) without the junk:
  same id and same camera as the query (where the camera is known), and id -1."""
  order = np.argsort(np.asarray(dist_row), kind="stable")
  if not ids_known:
    return order
  g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
  junk = (g_pids == -1) | ((g_pids == q_pid) & (g_camids == q_camid) & (q_camid >= 0))
  return order[~junk[order]]


def has_true_match(q_pid: int, q_camid: int, g_pids: np.ndarray, g_camids: np.ndarray) -> bool:
  """Whether the ranked list of this query can contain its identity at all."""
  g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
  same_cam = (g_camids == q_camid) & (q_camid >= 0)
  return q_pid != -1 and bool(np.any((g_pids == q_pid) & ~same_cam))


def true_match_mask(q_pids: np.ndarray, q_camids: np.ndarray, g_pids: np.ndarray,
                    g_camids: np.ndarray) -> np.ndarray:
  """`has_true_match` of every query at once, in O(Q + G) (the trainer asks at each
  evaluation, on galleries of up to 10^5 images)."""
  g_pids, g_camids = np.asarray(g_pids).tolist(), np.asarray(g_camids).tolist()
  per_pid = collections.Counter(g_pids)
  per_pid_cam = collections.Counter(zip(g_pids, g_camids, strict=True))
  return np.asarray([
      p != -1 and per_pid[p] - (per_pid_cam[(p, c)] if c >= 0 else 0) > 0
      for p, c in zip(np.asarray(q_pids).tolist(), np.asarray(q_camids).tolist(), strict=True)
  ], bool).reshape(-1)


def _parse_indices(text: str, n: int) -> list[int]:
  try:
    idx = [int(t) for t in text.split(",") if t.strip()]
  except ValueError:
    raise errors.ConfigError(f"--query_index {text!r}: expected comma-separated integers") from None
  bad = [i for i in idx if not 0 <= i < n]
  if not idx or bad:
    raise errors.ConfigError(f"--query_index {text!r}: indices must lie in 0..{n - 1} "
                     f"({n} query images)")
  return list(dict.fromkeys(idx))


def choose_queries(q_pids: np.ndarray, q_camids: np.ndarray, g_pids: np.ndarray,
                   g_camids: np.ndarray, num: int, seed: int) -> list[int]:
  """`num` query positions (sorted) drawn among those with a true match in the gallery; any
  queries when the ids are unknown on either side."""
  if np.all(np.asarray(q_pids) == -1) or np.all(np.asarray(g_pids) == -1):
    candidates = np.arange(len(q_pids))
  else:
    candidates = np.flatnonzero(true_match_mask(q_pids, q_camids, g_pids, g_camids))
    if not len(candidates):
      raise errors.DataError("no query image has a true match in the gallery (same id, another "
                       "camera): check --query_* and --gallery_*")
  rng = np.random.default_rng(seed)
  return sorted(int(i) for i in rng.choice(candidates, min(num, len(candidates)), replace=False))


def _fit(draw, text: str, width: int) -> str:
  while text and draw.textlength(text) > width:
    text = text[:-1]
  return text


def _draw_cell(sheet, draw, row: int, col: int, path: str, colour: tuple[int, int, int],
               label: str, layout: Layout) -> None:
  from PIL import Image

  x, y = layout.origin(row, col)
  b = layout.border
  draw.rectangle([x, y, x + layout.cell_w - 1, y + layout.image_h + 2 * b - 1], fill=colour)
  with Image.open(path) as im:
    img = im.convert("RGB").resize((layout.image_w, layout.image_h), Image.BILINEAR)
  sheet.paste(img, (x + b, y + b))
  draw.text((x + 1, y + layout.image_h + 2 * b + 1), _fit(draw, label, layout.cell_w - 2),
            fill=BLACK)


def draw_sheet(rows: list[dict], topk: int, layout: Layout = LAYOUT):
  """PIL image of `rows` ({query: Record, ranked: [(Record, distance)], known: bool})."""
  from PIL import Image, ImageDraw, ImageFont

  sheet = Image.new("RGB", layout.size(len(rows), topk + 1), WHITE)
  draw = ImageDraw.Draw(sheet)
  draw.font = ImageFont.load_default()
  for r, row in enumerate(rows):
    q = row["query"]
    _draw_cell(sheet, draw, r, 0, q.path, BLUE, f"query {q.pid}" if row["known"] else "query",
               layout)
    for k, (g, d) in enumerate(row["ranked"][:topk]):
      colour = (GREEN if g.pid == q.pid else RED) if row["known"] else GREY
      _draw_cell(sheet, draw, r, k + 1, g.path, colour, f"{k + 1}: {d:.3f}", layout)
  return sheet


def main(argv: list[str] | None = None) -> int:
  return common.run(_main, argv)


def _main(argv: list[str] | None) -> int:
  p = common.parser("visualize_ranks", __doc__)
  common.add_model_args(p)
  common.add_image_args(p, "query_", what="query images")
  common.add_image_args(p, "gallery_", what="gallery images")
  p.add_argument("--out", required=True, help="PNG file to write")
  p.add_argument("--num_queries", type=int, default=4, help="rows (queries drawn at random)")
  p.add_argument("--topk", type=int, default=10, help="ranked gallery images per query")
  p.add_argument("--query_index", default="", help="comma-separated query positions to show "
                 "instead of random ones, e.g. 0,5,17")
  p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
  p.add_argument("--seed", type=int, default=0, help="seed of the query draw")
  args = p.parse_args(argv)
  if not args.out.lower().endswith(".png"):
    raise errors.ConfigError(f"--out {args.out}: expected a .png file name")
  if args.num_queries < 1 or args.topk < 1:
    raise errors.ConfigError("--num_queries and --topk must be at least 1")

  q_recs = common.records_from_args(args, "query_", "query")
  g_recs = common.records_from_args(args, "gallery_", "gallery")
  trained = common.load_model(args)
  gal = trained.embed_records(g_recs, "reid", args.batch_size, "gallery")
  q_pids = np.asarray([r.pid for r in q_recs])
  q_camids = np.asarray([r.camid for r in q_recs])
  if args.query_index:
    picked = _parse_indices(args.query_index, len(q_recs))
  else:
    picked = choose_queries(q_pids, q_camids, gal.pids, gal.camids, args.num_queries, args.seed)

  # Re-ranking builds its neighbourhood graph from every query; plain distances need the picks only.
  from retext_jax import evaluation

  embed = q_recs if args.rerank else [q_recs[i] for i in picked]
  qry = trained.embed_records(embed, "reid", args.batch_size, "queries")
  if args.rerank:
    dist = evaluation.k_reciprocal_rerank(qry.feats, gal.feats)
  else:
    dist = evaluation.pairwise_distance(qry.feats, gal.feats, "cosine")
  position = {id(r): i for i, r in enumerate(q_recs)}
  row_of = {position[id(r)]: j for j, r in enumerate(qry.records)}
  ids_known = bool(np.any(q_pids != -1) and np.any(gal.pids != -1))

  rows, correct = [], 0
  for i in picked:
    if i not in row_of:
      print(f"query {i}: {q_recs[i].path} could not be read; skipped", file=sys.stderr)
      continue
    q, d = q_recs[i], dist[row_of[i]]
    known = ids_known and q.pid != -1
    order = ranked_gallery(d, q.pid, q.camid, gal.pids, gal.camids, known)
    ranked = [(gal.records[j], float(d[j])) for j in order[:args.topk]]
    rows.append({"query": q, "ranked": ranked, "known": known})
    if not known:
      verdict = "unknown (no ids)"
    elif not ranked:
      verdict = "wrong (empty ranking)"
    else:
      hit = ranked[0][0].pid == q.pid
      correct += hit
      verdict = "correct" if hit else f"wrong (pid {ranked[0][0].pid})"
    print(f"query {i} pid {q.pid} cam {q.camid} {os.path.basename(q.path)}: rank-1 {verdict}")
  if not rows:
    raise errors.DataError("none of the chosen query images could be read")

  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  draw_sheet(rows, args.topk).save(args.out)
  judged = sum(r["known"] for r in rows)
  if judged:
    print(f"rank-1: {correct}/{judged} correct")
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
