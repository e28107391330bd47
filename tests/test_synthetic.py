"""The synthetic benchmark: determinism, real-reader layouts, caption correctness, disjointness."""

from __future__ import annotations

import collections
import filecmp
import json
import os
import re

import numpy as np
import pytest

from input_pipeline.registry import get_dataset
from input_pipeline.synthetic import (
  ensure_benchmark,
  expected_manifest,
  get_preset,
  render_benchmark,
)
from input_pipeline.synthetic.attributes import COLOURS, HAIR_COLOURS, IdentityPool
from input_pipeline.synthetic.captions import make_captions

MARKET_NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
COLOUR_WORDS = sorted(set(COLOURS) | set(HAIR_COLOURS))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
  out = str(tmp_path_factory.mktemp("tiny"))
  render_benchmark(out, "tiny", seed=0, progress=False)
  return out


def _files(root: str) -> list[str]:
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, fs in os.walk(root) for f in fs)


def _load(path: str):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def test_same_seed_is_byte_identical_and_worker_count_does_not_matter(tiny, tmp_path):
  again = str(tmp_path / "again")
  render_benchmark(again, "tiny", seed=0, workers=2, progress=False)
  files = _files(tiny)
  assert files == _files(again)
  assert len([f for f in files if f.endswith(".jpg")]) == expected_manifest("tiny", 0)["images"]
  _, mismatch, errors = filecmp.cmpfiles(tiny, again, files, shallow=False)
  assert not mismatch and not errors


def test_other_seed_differs(tiny, tmp_path):
  other = str(tmp_path / "other")
  render_benchmark(other, "tiny", seed=1, progress=False)
  a = _load(os.path.join(tiny, "SYNTH-PEDES", "synthpedes_dataset.json"))
  b = _load(os.path.join(other, "SYNTH-PEDES", "synthpedes_dataset.json"))
  assert [r["captions"] for r in a] != [r["captions"] for r in b]
  q = sorted(os.listdir(os.path.join(tiny, "target_market", "query")))
  q_other = sorted(os.listdir(os.path.join(other, "target_market", "query")))
  assert q != q_other


def test_market_layout_read_by_real_reader(tiny):
  man = _load(os.path.join(tiny, "manifest.json"))
  for folder in ("source_market", "target_market"):
    root = os.path.join(tiny, folder)
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
      for name in os.listdir(os.path.join(root, sub)):
        m = MARKET_NAME.match(name)
        assert m, f"{sub}/{name} is not a Market-1501 name"
        assert 1 <= int(m.group(2)) <= 6
    junk = [n for n in os.listdir(os.path.join(root, "bounding_box_test")) if n.startswith("-1_")]
    distractors = [n for n in os.listdir(os.path.join(root, "bounding_box_test"))
                   if n.startswith("0000_")]
    counts = man["sets"][folder]
    assert len(junk) == counts["junk_images"] > 0
    assert len(distractors) == counts["distractor_images"] > 0
    ds = get_dataset("market1501", root)
    assert len(ds.train) == counts["train_images"]
    assert len(ds.query) == counts["query_images"]
    # The reader skips junk (-1) and keeps distractors (0) in the gallery.
    assert len(ds.gallery) == counts["gallery_images"] - counts["junk_images"]
    assert ds.num_train_pids == counts["train_ids"]
    assert ds.num_train_cams == 6 == counts["cameras"]
    assert sum(r.pid == 0 for r in ds.gallery) == counts["distractor_images"]
    train_pids = {int(os.path.basename(r.path)[:4]) for r in ds.train}
    assert train_pids.isdisjoint({r.pid for r in ds.query})
    # Every query has a true match in another camera (the Market protocol needs one).
    for q in ds.query:
      assert any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery), q.path


def test_captioned_layouts_read_by_real_readers(tiny):
  man = _load(os.path.join(tiny, "manifest.json"))
  synth = get_dataset("synthpedes", os.path.join(tiny, "SYNTH-PEDES"))
  assert len(synth.train) == man["sets"]["SYNTH-PEDES"]["images"]
  assert synth.num_train_pids == get_preset("tiny").synth_ids
  assert all(2 <= len(r.captions) <= 3 and len(r.attributes) == 1 for r in synth.train)
  assert all(len(r.attributes[0].split(",")) == 6 for r in synth.train)
  raw = _load(os.path.join(tiny, "SYNTH-PEDES", "synthpedes_dataset.json"))
  assert set(raw[0]) == {"id", "file_path", "attributes", "captions", "prompt_caption"}
  assert re.match(r"^Part\d+/\d+/\d+\.jpg$", raw[0]["file_path"])

  cuhk = get_dataset("cuhkpedes", os.path.join(tiny, "CUHK-PEDES"))
  counts = man["sets"]["CUHK-PEDES"]
  raw = _load(os.path.join(tiny, "CUHK-PEDES", "reid_raw.json"))
  assert {r["split"] for r in raw} == {"train", "val", "test"}
  assert len(cuhk.train) == sum(r["split"] == "train" for r in raw)
  assert cuhk.num_train_pids == counts["train_ids"]
  assert len({r.pid for r in cuhk.test}) == counts["test_ids"]
  for r in raw:
    assert r["processed_tokens"] == [re.findall(r"[a-z]+(?:-[a-z]+)*", c.lower())
                                     for c in r["captions"]]
    assert os.path.exists(os.path.join(tiny, "CUHK-PEDES", "imgs", r["file_path"]))


def _identity_keys(root: str) -> dict[str, set[str]]:
  keys = {}
  for folder in ("source_market", "target_market"):
    side = _load(os.path.join(root, folder, "identities.json"))
    keys[folder] = {v["key"] for v in side["identities"].values()}
  side = _load(os.path.join(root, "SYNTH-PEDES", "caption_errors.json"))
  keys["SYNTH-PEDES"] = {r["identity_key"] for r in side["images"]}
  side = _load(os.path.join(root, "CUHK-PEDES", "identities.json"))
  keys["CUHK-PEDES"] = set(side["identities"].values())
  return keys


def test_identities_are_disjoint_across_sets(tiny):
  keys = _identity_keys(tiny)
  names = sorted(keys)
  for i, a in enumerate(names):
    assert keys[a], a
    for b in names[i + 1:]:
      assert keys[a].isdisjoint(keys[b]), (a, b)
  # Not just distinct labels: no two identities anywhere share the full attribute set.
  sigs = []
  for folder in ("source_market", "target_market"):
    side = _load(os.path.join(tiny, folder, "identities.json"))
    sigs += [json.dumps({k: v for k, v in d["attributes"].items() if k != "key"}, sort_keys=True)
             for d in side["identities"].values()]
  assert len(sigs) == len(set(sigs))


def _caption_consistent(text: str, v: dict) -> bool:
  """An independent reading of a caption against the true visible attributes."""
  low = text.lower()
  said = {c for c in COLOUR_WORDS if re.search(rf"\b{c}\b", low)}
  allowed = {v["upper_colour"], v["lower_colour"], v["shoes_colour"]}
  allowed |= {v["hair_colour"]} if v["hair_style"] != "bald" else set()
  allowed |= {v["pattern_colour"]} if v["upper_pattern"] != "solid" else set()
  allowed |= {v["bag_colour"]} if v["bag"] != "none" else set()
  allowed |= {v["accessory_colour"]} if v["accessory"] in ("cap", "beanie", "scarf") else set()
  bag_said = bool(re.search(r"backpack|rucksack|handbag|shoulder bag|messenger bag", low))
  acc_said = bool(re.search(r"\bcap\b|beanie|woolly hat|glasses|scarf", low))
  gender_ok = bool(re.search(rf"\b{v['gender']}\b", low))
  lower_words = {"trousers": ("trousers", "pants"), "shorts": ("shorts",), "skirt": ("skirt",)}
  lower_ok = any(re.search(rf"\b{v['lower_colour']} {w}\b", low)
                 for w in lower_words[v["lower_type"]])
  return (said <= allowed and v["upper_colour"] in said and lower_ok and gender_ok
          and bag_said == (v["bag"] != "none") and acc_said == (v["accessory"] != "none"))


def test_captions_describe_their_image_except_flagged_errors(tiny):
  side = _load(os.path.join(tiny, "SYNTH-PEDES", "caption_errors.json"))
  raw = {r["file_path"]: r for r in _load(os.path.join(tiny, "SYNTH-PEDES",
                                                        "synthpedes_dataset.json"))}
  assert side["caption_error_rate"] == get_preset("tiny").caption_error_rate
  for img in side["images"]:
    caps = raw[img["file_path"]]["captions"]
    assert len(caps) == len(img["errors"])
    for text, err in zip(caps, img["errors"], strict=True):
      assert _caption_consistent(text, img["visible"]) == (err is None), (text, err)


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_caption_error_rate_is_respected(rate):
  pool = IdentityPool(seed=3)
  rng = np.random.default_rng(0)
  from input_pipeline.synthetic.attributes import VIEWS, visible_attributes

  flagged = detected = total = 0
  for i in range(300):
    v = visible_attributes(pool.sample("synthpedes", f"t/{i}"), VIEWS[i % 3])
    for text, err in make_captions(v, rng, 3, rate):
      total += 1
      flagged += err is not None
      detected += not _caption_consistent(text, v)
  assert flagged == detected  # every flagged caption is really wrong, and only those
  assert abs(flagged / total - rate) < 0.05


def test_demo_preset_shape():
  p = get_preset("demo")
  assert p.num_cameras >= 6
  assert 150 <= p.source_train_ids <= 200 and p.train_images_per_id >= 6
  assert p.target_test_ids >= 100
  assert 300 <= p.synth_ids <= 500 and 100 <= p.cuhk_ids <= 200
  man = expected_manifest("demo", 0)  # planned, not rendered
  assert man["sets"]["source_market"]["cameras"] >= 6
  assert man["sets"]["target_market"]["query_images"] == p.target_test_ids * 2


def test_a_colour_does_not_give_identity_away():
  pool = IdentityPool(seed=0)
  for domain, n in (("source", 180), ("target", 100)):
    idents = [pool.sample(domain, f"{domain}/{i}") for i in range(n)]
    upper = collections.Counter(x.upper_colour for x in idents)
    assert len(upper) >= 6 and all(c >= 4 for _, c in upper.most_common(4)), upper
    # Even the pair (upper colour, lower colour) is shared by several identities.
    pairs = collections.Counter((x.upper_colour, x.lower_colour) for x in idents)
    assert pairs.most_common(1)[0][1] >= 3, pairs


def test_ensure_benchmark_renders_once_then_reuses(tmp_path):
  out = str(tmp_path / "cache")
  ensure_benchmark(out, "tiny", 5)
  man_path = os.path.join(out, "manifest.json")
  mtime = os.stat(man_path).st_mtime_ns
  assert ensure_benchmark(out, "tiny", 5) == out
  assert os.stat(man_path).st_mtime_ns == mtime  # untouched: nothing re-rendered
  ensure_benchmark(out, "tiny", 6)  # another seed: rendered again
  assert _load(man_path)["seed"] == 6


def test_unknown_preset_is_a_clear_error(tmp_path):
  with pytest.raises(KeyError, match="unknown synthetic preset 'huge'"):
    render_benchmark(str(tmp_path), "huge")
