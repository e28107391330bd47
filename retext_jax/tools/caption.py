r"""Captions every image of a dataset split offline, then writes a captions sidecar.

  python -m retext_jax.tools.caption --dataset market1501:/data/Market-1501 \
      --model ~/models/ReText-LLaVA --out market_captions.jsonl
  python -m retext_jax.tools.caption --dataset market1501:$D/source_market --rules synthetic \
      --out source_captions.jsonl

Captioners:
  --model DIR       a vision-language model in a local folder, loaded with transformers'
                    AutoProcessor + AutoModelForImageTextToText (LLaVA-style; e.g. the ReText
                    authors' timmzak/ReText-LLaVA). Nothing is downloaded. Needs torch.
  --rules synthetic captions from the attribute annotations of the synthetic benchmark
                    (identities.json): the fixed template, no errors.

The prompt (`--prompt`, default PROMPT) is a fixed template asking for gender, age, upper and
lower clothing, shoes, bag and other accessories. Every split is captioned unless the dataset
spec names one (READER:ROOT:SPLIT).

Resumable: each caption is one JSON line {"path", "caption"} appended to --out and flushed to
disk after every batch; a re-run skips the images already there, and a line cut short by a kill
is dropped and written again, so nothing is lost or duplicated. At the end the sidecar
(--sidecar, default captions.json in the dataset folder) maps each image path relative to the
dataset folder to its captions; any reader attaches it with `captions=captions.json`
(`input_pipeline.captions_sidecar`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence

from input_pipeline import captions_sidecar
from input_pipeline.records import Record
from retext_jax import errors
from retext_jax.tools import common

PROMPT = ("Describe the person in this image in one sentence: gender, age, upper clothing, "
          "lower clothing, shoes, bag and any other accessories.")

Captioner = Callable[[Sequence[Record]], list[str]]


def read_done(path: str) -> dict[str, str]:
  """{image path: caption} of a JSONL file. A last line without its newline (a run killed while
  writing it) is cut off the file and captioned again; any other bad line is an error."""
  if not os.path.exists(path):
    return {}
  with open(path, "rb") as f:
    data = f.read()
  done, keep = {}, 0
  for i, line in enumerate(data.splitlines(keepends=True)):
    if not line.endswith(b"\n"):
      break
    if line.strip():
      try:
        row = json.loads(line)
        done[row["path"]] = row["caption"]
      except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise errors.DataError(f"{path}: line {i + 1} is not a caption record") from None
    keep += len(line)
  if keep < len(data):
    with open(path, "r+b") as f:
      f.truncate(keep)
  return done


def caption_records(records: Sequence[Record], captioner: Captioner, out: str,
                    batch_size: int = 8, progress: bool = True) -> dict[str, str]:
  """Captions the records not yet in `out` (JSONL), appending as it goes; returns them all."""
  done = read_done(out)
  todo = [r for r in records if r.path not in done]
  bar = None
  if progress:
    import tqdm

    bar = tqdm.tqdm(total=len(records), initial=len(records) - len(todo), unit="img",
                    desc="caption")  # tqdm shows the rate and the ETA
  with open(out, "a", encoding="utf-8") as f:
    for start in range(0, len(todo), batch_size):
      batch = todo[start:start + batch_size]
      texts = captioner(batch)
      for r, text in zip(batch, texts, strict=True):
        f.write(json.dumps({"path": r.path, "caption": text}, ensure_ascii=False) + "\n")
        done[r.path] = text
      f.flush()
      os.fsync(f.fileno())
      if bar is not None:
        bar.update(len(batch))
  if bar is not None:
    bar.close()
  return done


def rules_captioner(dataset) -> Captioner:
  """Template captions from the synthetic benchmark's annotations (`identities.json`)."""
  from input_pipeline.synthetic.captions import annotation_captions

  path = os.path.join(dataset.root, "identities.json")
  if not os.path.isfile(path):
    raise errors.MissingFileError(f"--rules synthetic: {path} does not exist (only the synthetic "
                                  "benchmark's Market-layout domains have attribute annotations)")
  with open(path, encoding="utf-8") as f:
    captions = annotation_captions(json.load(f))

  def caption(records: Sequence[Record]) -> list[str]:
    rel = (captions_sidecar.relative_path(r.path, dataset.root) for r in records)
    return [captions.get(x, [""])[0] for x in rel]

  return caption


def vlm_captioner(folder: str, prompt: str, max_new_tokens: int = 64) -> Captioner:
  """A transformers image-text-to-text model from a local folder, greedy decoding."""
  if not os.path.isdir(folder):
    raise errors.MissingFileError(f"--model {folder} does not exist (point it at a local "
                                  "folder holding a vision-language model; nothing is downloaded)")
  try:
    import torch
    import transformers
  except ImportError as e:
    raise errors.DependencyError(f"--model needs torch and transformers ({e.name} is missing)"
                                 ) from None
  try:
    processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModelForImageTextToText.from_pretrained(folder,
                                                                     local_files_only=True)
  except (OSError, ValueError, KeyError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise errors.ConfigError(f"--model {folder} is not an image-text-to-text model that "
                             f"transformers can load: {first}") from None
  model.eval()
  tokenizer = getattr(processor, "tokenizer", processor)
  tokenizer.padding_side = "left"  # generation continues every row from its own last token
  messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
  text = processor.apply_chat_template(messages, add_generation_prompt=True)

  def caption(records: Sequence[Record]) -> list[str]:
    from PIL import Image

    images = [Image.open(r.path).convert("RGB") for r in records]
    inputs = processor(images=images, text=[text] * len(images), return_tensors="pt",
                       padding=True)
    with torch.no_grad():
      ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = ids[:, inputs["input_ids"].shape[1]:]
    return [" ".join(t.split()) for t in processor.batch_decode(new, skip_special_tokens=True)]

  return caption


def main(argv: list[str] | None = None) -> int:
  return common.run(_main, argv)


def _main(argv: list[str] | None) -> int:
  from input_pipeline import registry

  p = common.parser("caption", __doc__)
  p.add_argument("--dataset", required=True, metavar="READER:ROOT[:SPLIT]",
                 help="the images to caption (every split unless one is named)")
  who = p.add_mutually_exclusive_group(required=True)
  who.add_argument("--model", help="local folder of a transformers vision-language model")
  who.add_argument("--rules", choices=("synthetic",), help="template captions from annotations")
  p.add_argument("--prompt", default=PROMPT, help="the instruction given with each image")
  p.add_argument("--max_new_tokens", type=int, default=64)
  p.add_argument("--batch_size", type=int, default=8, help="images per generate call")
  p.add_argument("--out", required=True, help="JSONL file the captions are appended to")
  p.add_argument("--sidecar", help="captions sidecar to write (default: <dataset>/captions.json)")
  args = p.parse_args(argv)
  parts = args.dataset.split(":")
  if len(parts) not in (2, 3) or not all(parts):
    raise errors.ConfigError(f"--dataset {args.dataset!r}: expected READER:ROOT[:SPLIT]")
  dataset = registry.get_dataset(parts[0], parts[1])
  splits = [parts[2]] if len(parts) == 3 else list(captions_sidecar.SPLITS)
  records = list({r.path: r for s in splits for r in dataset.split(s)}.values())
  if not records:
    raise errors.DataError(f"--dataset {args.dataset!r}: no images")
  captioner = (rules_captioner(dataset) if args.rules else
               vlm_captioner(args.model, args.prompt, args.max_new_tokens))
  start = time.perf_counter()
  done = caption_records(records, captioner, args.out, args.batch_size)
  sidecar = args.sidecar or os.path.join(dataset.root, "captions.json")
  captions_sidecar.write(sidecar, {
      captions_sidecar.relative_path(r.path, dataset.root): [done[r.path]]
      for r in records if done[r.path]})
  empty = sum(not done[r.path] for r in records)
  print(f"captioned {len(records)} images in {time.perf_counter() - start:.0f} s -> {args.out}; "
        f"sidecar {sidecar}" + (f" ({empty} without a caption)" if empty else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
