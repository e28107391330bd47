r"""Queries a gallery with an image or a text description and prints the top-k with scores.

  python -m retext_jax.tools.query --workdir workdirs/demo --image person.jpg \
      --gallery_images my_gallery/ --topk 10
  python -m retext_jax.tools.query --workdir workdirs/demo \
      --text "a woman in a red jacket with a black backpack" --gallery gallery_matching.npy

The gallery is a folder, a dataset split, or a feature file from `tools.extract` (faster when
querying the same gallery many times: extract it once; image queries need `--kind reid`
features, text queries `--kind matching`; a file extracted by another model, or another step of
it, is refused, by the fingerprint `extract` records). Scores are cosine similarities; `--json`
writes the ranked list as JSON too.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from input_pipeline.records import Record
from retext_jax import errors
from retext_jax.tools import common


def rank(query: np.ndarray, gallery: np.ndarray, topk: int) -> tuple[np.ndarray, np.ndarray]:
  """(indices, cosine scores) of the `topk` most similar gallery rows, best first (ties by
  gallery order)."""
  scores = gallery @ query
  order = np.argsort(-scores, kind="stable")[:topk]
  return order, scores[order]


def _gallery(args, trained, kind: str) -> dict:
  if args.gallery:
    g = common.load_features(args.gallery)
    if g.get("kind") != kind:
      raise errors.ConfigError(f"--gallery {args.gallery} holds {g.get('kind')!r} features; a "
                       f"{'text' if kind == 'matching' else 'image'} query needs --kind {kind} "
                       "(python -m retext_jax.tools.extract)")
    if g.get("fingerprint") != trained.fingerprint:
      made_by = (f"was extracted by {g.get('model')} at step {g.get('step')} ({g.get('workdir')})"
                 if g.get("fingerprint") else "records no model (extracted before feature files "
                 "carried their provenance)")
      raise errors.ConfigError(
          f"--gallery {args.gallery} {made_by}, not by this model, {trained.config.name} at step "
          f"{trained.step} ({trained.workdir}): its scores would be meaningless; extract the "
          f"gallery again: python -m retext_jax.tools.extract --workdir {args.workdir} ...")
    return g
  records = common.records_from_args(args, "gallery_")
  f = trained.embed_records(records, kind, args.batch_size, progress="gallery")
  return {"features": f.feats, "pids": f.pids, "camids": f.camids,
          "paths": [r.path for r in f.records]}


def main(argv: list[str] | None = None) -> int:
  return common.run(_main, argv)


def _main(argv: list[str] | None) -> int:
  p = common.parser("query", __doc__)
  common.add_model_args(p)
  q = p.add_mutually_exclusive_group(required=True)
  q.add_argument("--image", help="query image file")
  q.add_argument("--text", help="query description (text-to-image retrieval)")
  p.add_argument("--gallery", help="feature file from tools.extract")
  common.add_image_args(p, "gallery_", required=False, what="gallery images")
  p.add_argument("--topk", type=int, default=10)
  p.add_argument("--json", help="also write the ranked list to this JSON file")
  args = p.parse_args(argv)
  if sum(bool(x) for x in (args.gallery, args.gallery_images, args.gallery_dataset)) != 1:
    p.error("give exactly one of --gallery, --gallery_images, --gallery_dataset")
  if args.text is not None and not args.text.strip():
    p.error("--text is empty: describe the person to look for")
  if args.topk < 1:
    p.error(f"--topk {args.topk}: expected a positive number of results")
  trained = common.load_model(args)
  if args.text is not None:
    kind, what = "matching", repr(args.text)
    query = trained.text_embeddings([args.text])[0]
  else:
    kind, what = "reid", args.image
    query = trained.embed_records([Record(args.image, -1, -1, "test")], kind,
                                 args.batch_size, progress=None).feats
    if not len(query):
      raise errors.DataError(f"--image {args.image} cannot be read as an image")
    query = query[0]
  g = _gallery(args, trained, kind)
  order, scores = rank(query, np.asarray(g["features"], np.float32), args.topk)
  hits = [{"rank": r + 1, "score": float(scores[r]), "path": g["paths"][i],
           "pid": int(g["pids"][i]), "camid": int(g["camids"][i])} for r, i in enumerate(order)]
  print(f"query {what} against {len(g['paths'])} gallery images (step {trained.step}):")
  print(f"{'rank':>4}  {'score':>6}  {'pid':>5}  {'cam':>3}  path")
  for h in hits:
    print(f"{h['rank']:>4}  {h['score']:6.3f}  {h['pid']:>5}  {h['camid']:>3}  {h['path']}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"query": args.text if args.text is not None else args.image, "kind": kind,
                 "results": hits}, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
