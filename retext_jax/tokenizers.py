"""Tokenizers built from local files, behind one small interface the input pipeline uses.

No network, no JAX, no TensorFlow: `input_pipeline` tokenises every caption once, up front.
BERT WordPiece comes from a `vocab.txt` (or a folder holding one, or a `tokenizer.json`);
CLIP byte-level BPE from a folder with `vocab.json` + `merges.txt` (or `tokenizer.json`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from retext_jax import errors

# What a tokenizer is built from; copied beside converted weights and into training workdirs.
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "vocab.json", "merges.txt")
_BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_PROBE = "a man wearing a black jacket and blue jeans is walking with a red backpack"


class TextTokenizer:
  """Wraps a `tokenizers.Tokenizer`: fixed-length int32 ids and attention masks."""

  def __init__(self, tokenizer: tokenizers.Tokenizer, *, kind: str, pad_id: int, source: str):
    self._tok = tokenizer
    self.kind = kind
    self.pad_id = pad_id
    self.source = source

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  def encode(self, texts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (ids, mask), each int32 [len(texts), max_len]; long texts are truncated.

    Truncation keeps the closing special token ([SEP] / <|endoftext|>), which CLIP pools on.
    """
    self._tok.enable_truncation(max_len)
    self._tok.enable_padding(
        length=max_len, pad_id=self.pad_id, pad_token=self._tok.id_to_token(self.pad_id) or ""
    )
    encs = self._tok.encode_batch(list(texts))
    ids = np.asarray([e.ids for e in encs], np.int32).reshape(len(texts), max_len)
    mask = np.asarray([e.attention_mask for e in encs], np.int32).reshape(len(texts), max_len)
    return ids, mask

  def decode(self, ids: Sequence[int]) -> str:
    text = self._tok.decode([int(i) for i in ids], skip_special_tokens=True)
    if self.kind == "clip":  # CLIP BPE marks word ends with "</w>" (as transformers' CLIPTokenizer)
      text = text.replace("</w>", " ").strip()
    return text

  def unknown_fraction(self, text: str = _PROBE) -> float:
    unk_token = getattr(self._tok.model, "unk_token", None) or "[UNK]"
    unk = self._tok.token_to_id(unk_token)
    ids = self._tok.encode(text, add_special_tokens=False).ids
    return sum(i == unk for i in ids) / max(len(ids), 1)


def load_tokenizer(path: str, kind: str = "bert", *, check: bool = True) -> TextTokenizer:
  """Builds a tokenizer from local files.

  Args:
    path: a folder (with tokenizer.json, vocab.txt, or vocab.json + merges.txt) or a file.
    kind: "bert" (WordPiece, lower-cased as the vocab's tokenizer_config says) or "clip" (BPE).
    check: raise if ordinary English words become [UNK] (the transformers v5 `vocab_file`
      pitfall builds exactly such a tokenizer, silently).
  """
  if kind == "bert":
    tok = _bert(path)
  elif kind == "clip":
    tok = _clip(path)
  else:
    raise errors.ConfigError(f"unknown tokenizer kind {kind!r}; expected 'bert' or 'clip'")
  if check and tok.unknown_fraction() > 0:
    raise errors.DataError(
        f"tokenizer from {path} maps ordinary English words to [UNK] "
        f"({tok.unknown_fraction():.0%} of {_PROBE!r}); is it the right vocabulary?"
    )
  return tok


def copy_tokenizer_files(source: str, out_dir: str) -> list[str]:
  """Copies the tokenizer files found in folder `source` (or beside file `source`) to `out_dir`."""
  folder = source if os.path.isdir(source) else os.path.dirname(source)
  found = [n for n in TOKENIZER_FILES if os.path.isfile(os.path.join(folder, n))]
  if found:
    os.makedirs(out_dir, exist_ok=True)
  for name in found:
    shutil.copy(os.path.join(folder, name), os.path.join(out_dir, name))
  return found


def _find(path: str, *names: str) -> str | None:
  if os.path.isfile(path):
    return path if os.path.basename(path) in names else None
  for n in names:
    p = os.path.join(path, n)
    if os.path.isfile(p):
      return p
  return None


def _lowercase(folder: str) -> bool:
  cfg = _find(folder, "tokenizer_config.json")
  if cfg is None:
    return True
  with open(cfg) as f:
    return bool(json.load(f).get("do_lower_case", True))


def _bert(path: str) -> TextTokenizer:
  if not os.path.exists(path):
    raise errors.MissingFileError(
        f"no tokenizer files at {path}: expected vocab.txt or tokenizer.json")
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  tj = _find(path, "tokenizer.json")
  if tj is not None:
    tok = tokenizers.Tokenizer.from_file(tj)
  else:
    vocab = _find(path, "vocab.txt")
    if vocab is None:
      raise errors.MissingFileError(f"no vocab.txt or tokenizer.json in {path}")
    tok = tokenizers.Tokenizer(models.WordPiece.from_file(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=_lowercase(folder))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
      raise errors.DataError(f"{vocab} has no [CLS]/[SEP] tokens: not a BERT WordPiece vocabulary")
    # Registered as special: kept whole in raw text and dropped by decode, as in transformers.
    tok.add_special_tokens(
        [t for t in _BERT_SPECIALS if tok.token_to_id(t) is not None]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
  tok.no_truncation()
  tok.no_padding()
  pad = tok.token_to_id("[PAD]")
  return TextTokenizer(tok, kind="bert", pad_id=0 if pad is None else pad, source=path)


def _clip(path: str) -> TextTokenizer:
  tj = _find(path, "tokenizer.json")
  if tj is not None:
    tok = tokenizers.Tokenizer.from_file(tj)
  else:
    vocab, merges = _find(path, "vocab.json"), _find(path, "merges.txt")
    if vocab is None or merges is None:
      raise errors.MissingFileError(f"no tokenizer.json or vocab.json + merges.txt in {path}")
    tok = tokenizers.Tokenizer(
        models.BPE.from_file(vocab, merges, unk_token="<|endoftext|>", end_of_word_suffix="</w>")
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(tokenizers.Regex(r"\s+"), " "),
         normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(
            tokenizers.Regex(
                r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"
                r"|[^\s\p{L}\p{N}]+"
            ),
            behavior="removed", invert=True,
        ),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    if bos is None or eos is None:
      raise errors.DataError(
          f"{vocab} has no <|startoftext|>/<|endoftext|> tokens: not a CLIP vocabulary"
      )
    tok.add_special_tokens(["<|startoftext|>", "<|endoftext|>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)],
    )
  tok.no_truncation()
  tok.no_padding()
  # CLIP pads with <|endoftext|>; pooling uses the first end-of-text position (argmax id in HF).
  eos = tok.token_to_id("<|endoftext|>")
  return TextTokenizer(tok, kind="clip", pad_id=eos, source=path)
