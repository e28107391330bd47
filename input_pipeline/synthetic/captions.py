"""Captions from visible attributes: several templates and paraphrases, and VLM-like errors.

A captioner describes what it sees (`attributes.visible_attributes`), in varied words. With
probability `error_rate` a caption gets exactly one error of the kinds a VLM makes: a wrong
colour, a missing item (a bag or accessory it did not mention), or a hallucinated item. Errors
are returned beside the text so tests and analyses know which captions are wrong.
"""

from __future__ import annotations

import re

import numpy as np

from input_pipeline.synthetic.attributes import COLOURS
from retext_jax import errors

UPPER_WORDS = {"t-shirt": ("t-shirt", "tee"), "shirt": ("shirt",), "jacket": ("jacket", "coat"),
               "sweater": ("sweater", "jumper")}
LOWER_WORDS = {"trousers": ("trousers", "pants"), "shorts": ("shorts",), "skirt": ("skirt",)}
BAG_WORDS = {"backpack": ("backpack", "rucksack"), "handbag": ("handbag",),
             "shoulder bag": ("shoulder bag", "messenger bag")}
ACCESSORY_WORDS = {"cap": ("cap",), "beanie": ("beanie", "woolly hat"), "glasses": ("glasses",),
                   "scarf": ("scarf",)}
SHOE_WORDS = ("shoes", "sneakers", "trainers")
ERROR_TYPES = ("wrong_colour", "missing_item", "hallucinated_item")


def mentioned_colours(v: dict[str, str]) -> set[str]:
  """Every colour word a correct caption of `v` may contain."""
  out = {v["upper_colour"], v["lower_colour"], v["shoes_colour"]}
  if v["hair_style"] != "bald":
    out.add(v["hair_colour"])
  if v["upper_pattern"] != "solid":
    out.add(v["pattern_colour"])
  if v["bag"] != "none":
    out.add(v["bag_colour"])
  if v["accessory"] in ("cap", "beanie", "scarf"):
    out.add(v["accessory_colour"])
  return out


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
  return options[int(rng.integers(len(options)))]


def _hair(v: dict[str, str], rng: np.random.Generator) -> str:
  if v["hair_style"] == "bald":
    return "a bald head"
  c = v["hair_colour"]
  return {"short": _pick(rng, (f"short {c} hair", f"{c} hair cut short")),
          "long": _pick(rng, (f"long {c} hair", f"{c} hair down to the shoulders")),
          "ponytail": _pick(rng, (f"{c} hair in a ponytail", f"a {c} ponytail"))}[v["hair_style"]]


def _upper(v: dict[str, str], rng: np.random.Generator) -> str:
  c, pc, word = v["upper_colour"], v["pattern_colour"], _pick(rng, UPPER_WORDS[v["upper_type"]])
  pattern = v["upper_pattern"]
  if pattern == "stripes":
    return _pick(rng, (f"a {c} {word} with {pc} stripes", f"a {c} and {pc} striped {word}"))
  if pattern == "checks":
    return _pick(rng, (f"a {c} and {pc} checked {word}", f"a {c} {word} with {pc} checks"))
  if pattern == "logo":
    return f"a {c} {word} with a {pc} logo on the front"
  return f"a {c} {word}"


def _lower(v: dict[str, str], rng: np.random.Generator) -> str:
  word = _pick(rng, LOWER_WORDS[v["lower_type"]])
  art = "a " if v["lower_type"] == "skirt" else ""
  return f"{art}{v['lower_colour']} {word}"


def _bag(v: dict[str, str], rng: np.random.Generator) -> str:
  if v["bag"] == "none":
    return ""
  c, word = v["bag_colour"], _pick(rng, BAG_WORDS[v["bag"]])
  return _pick(rng, (f"carrying a {c} {word}", f"with a {c} {word}"))


def _accessory(v: dict[str, str], rng: np.random.Generator) -> str:
  a = v["accessory"]
  if a == "none":
    return ""
  if a == "glasses":
    return "wearing glasses"
  return f"wearing a {v['accessory_colour']} {_pick(rng, ACCESSORY_WORDS[a])}"


def _compose(v: dict[str, str], rng: np.random.Generator) -> str:
  person = v["gender"]
  pron = "He" if person == "man" else "She"
  subj = _pick(rng, (f"a {person}", f"a young {person}", f"an adult {person}"))
  hair, upper, lower = _hair(v, rng), _upper(v, rng), _lower(v, rng)
  shoes = f"{v['shoes_colour']} {_pick(rng, SHOE_WORDS)}"
  extras = [p for p in (_bag(v, rng), _accessory(v, rng)) if p]
  extra = (", " + " and ".join(extras)) if extras else ""
  t = int(rng.integers(4))
  if t == 0:
    s = f"{subj} with {hair} is wearing {upper}, {lower} and {shoes}{extra}."
  elif t == 1:
    s = f"The {person} wears {upper} and {lower}. {pron} has {hair} and {shoes}{extra}."
  elif t == 2:
    s = f"This {person} has {hair}, dressed in {upper} over {lower}, with {shoes} on{extra}."
  else:
    s = f"{subj} in {upper} and {lower} walks by{extra}. {pron} has {hair} and {shoes}."
  return s[0].upper() + s[1:]


def _inject_error(v: dict[str, str], rng: np.random.Generator) -> tuple[dict[str, str], dict]:
  """Returns attributes with one VLM-like mistake, and a record of the mistake."""
  kinds = list(ERROR_TYPES)
  if v["bag"] == "none" and v["accessory"] == "none":
    kinds.remove("missing_item")
  if v["bag"] != "none" and v["accessory"] != "none":
    kinds.remove("hallucinated_item")
  kind = kinds[int(rng.integers(len(kinds)))]
  w = dict(v)
  if kind == "wrong_colour":
    field = ("upper_colour", "lower_colour", "shoes_colour")[int(rng.integers(3))]
    unused = sorted(set(COLOURS) - mentioned_colours(v))
    w[field] = unused[int(rng.integers(len(unused)))]
    return w, {"type": kind, "field": field, "true": v[field], "said": w[field]}
  item = "bag" if kind == "missing_item" and v["bag"] != "none" else "accessory"
  if kind == "missing_item":
    if v["bag"] != "none" and v["accessory"] != "none":
      item = ("bag", "accessory")[int(rng.integers(2))]
    w[item] = "none"
    return w, {"type": kind, "field": item, "true": v[item], "said": "none"}
  item = "bag" if v["bag"] == "none" else "accessory"
  options = tuple(BAG_WORDS) if item == "bag" else ("cap", "beanie", "scarf")
  w[item] = _pick(rng, options)
  w[item + "_colour"] = _pick(rng, tuple(sorted(set(COLOURS) - mentioned_colours(v))))
  return w, {"type": kind, "field": item, "true": "none", "said": w[item]}


def make_captions(visible: dict[str, str], rng: np.random.Generator, num: int,
                  error_rate: float) -> list[tuple[str, dict | None]]:
  """`num` captions of one image, each with its error record (None when correct)."""
  if not 0.0 <= error_rate <= 1.0:
    raise errors.ConfigError(f"caption error rate must be in [0, 1], got {error_rate}")
  out = []
  for _ in range(num):
    if rng.random() < error_rate:
      said, err = _inject_error(visible, rng)
    else:
      said, err = visible, None
    out.append((_compose(said, rng), err))
  return out


def prompt_caption(v: dict[str, str]) -> str:
  """The fixed-template caption PLIP stores as `prompt_caption` (no paraphrase, no error)."""
  hair = "no hair" if v["hair_style"] == "bald" else f"{v['hair_colour']} hair"
  bag = f", carrying a {v['bag_colour']} {v['bag']}" if v["bag"] != "none" else ""
  return (f"A {v['gender']} with {hair} is wearing a {v['upper_colour']} {v['upper_type']}, "
          f"{v['lower_colour']} {v['lower_type']} and {v['shoes_colour']} shoes{bag}.")


def annotation_captions(identities_json: dict) -> dict[str, list[str]]:
  """Captions sidecar of a Market-layout domain from its `identities.json`: each image of a
  person gets `prompt_caption` of what its view shows (distractors and junk get none)."""
  from input_pipeline.synthetic.attributes import Identity, visible_attributes

  people = {pid: Identity(**v["attributes"]) for pid, v in identities_json["identities"].items()}
  return {rel: [prompt_caption(visible_attributes(people[im["pid"]], im["view"] or "front"))]
          for rel, im in identities_json["images"].items() if im["pid"] in people}


def plip_attributes(v: dict[str, str]) -> str:
  """The six comma-separated attributes of a SYNTH-PEDES record (`unknown` when absent)."""
  hair = "bald" if v["hair_style"] == "bald" else f"{v['hair_colour']} hair"
  bag = f"{v['bag_colour']} {v['bag']}" if v["bag"] != "none" else "unknown"
  return ",".join([v["gender"], hair, f"{v['upper_colour']} {v['upper_type']}",
                   f"{v['lower_colour']} {v['lower_type']}", f"{v['shoes_colour']} shoes", bag])


def tokenize(caption: str) -> list[str]:
  """CUHK-PEDES `processed_tokens`: lower-case words, punctuation dropped."""
  return re.findall(r"[a-z]+(?:-[a-z]+)*", caption.lower())
