"""Attribute vocabulary and identity sampling: an identity IS a combination of attributes.

Colours are drawn from a small shared palette on purpose, so that many identities share each
garment colour and a model has to combine pattern, bag, hair, shoes and body shape to tell them
apart. Each domain has its own attribute frequencies (the domain shift a generalising model must
survive).
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Garment colours (one word each, so captions can be parsed back).
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 32),
    "white": (232, 232, 228),
    "grey": (128, 128, 132),
    "red": (190, 36, 40),
    "blue": (40, 72, 170),
    "green": (46, 140, 64),
    "yellow": (228, 196, 48),
    "pink": (232, 140, 176),
    "purple": (112, 56, 150),
    "brown": (116, 76, 44),
}
HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (22, 20, 20),
    "brown": (92, 58, 34),
    "blonde": (214, 182, 110),
    "grey": (150, 150, 150),
    "red": (150, 60, 30),
}
SKIN_TONES: tuple[tuple[int, int, int], ...] = (
    (246, 214, 188), (226, 184, 150), (196, 148, 112), (150, 104, 72), (104, 70, 48),
)
GENDERS = ("man", "woman")
HAIR_STYLES = ("short", "long", "ponytail", "bald")
UPPER_TYPES = ("t-shirt", "shirt", "jacket", "sweater")
LONG_SLEEVED = ("shirt", "jacket", "sweater")
PATTERNS = ("solid", "stripes", "checks", "logo")
LOWER_TYPES = ("trousers", "shorts", "skirt")
SHOE_COLOURS = ("black", "white", "brown", "grey", "red", "blue")
BAGS = ("none", "backpack", "handbag", "shoulder bag")
ACCESSORIES = ("none", "cap", "beanie", "glasses", "scarf")
VIEWS = ("front", "back", "side")


@dataclasses.dataclass(frozen=True)
class Identity:
  """One synthetic person. `key` is global across the whole benchmark (e.g. "target/0042")."""

  key: str
  gender: str
  width: float  # body width factor (1 = average)
  height: float  # body height factor (1 = average)
  skin: int
  hair_style: str
  hair_colour: str
  upper_type: str
  upper_colour: str
  upper_pattern: str
  pattern_colour: str
  lower_type: str
  lower_colour: str
  shoes_colour: str
  bag: str
  bag_colour: str
  accessory: str
  accessory_colour: str

  def signature(self) -> tuple:
    """The discrete attributes plus the quantised body shape: what makes two people different."""
    d = dataclasses.asdict(self)
    d.pop("key")
    d["width"] = round(self.width, 1)
    d["height"] = round(self.height, 2)
    return tuple(sorted(d.items()))

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class DomainStyle:
  """Attribute frequencies of one domain (weights, normalised at sampling time)."""

  colour_weights: dict[str, float]
  pattern_weights: dict[str, float]
  lower_weights: dict[str, float]
  bag_weights: dict[str, float]
  accessory_weights: dict[str, float]
  woman_prob: float = 0.5


_UNIFORM_COLOURS = {c: 1.0 for c in COLOURS}
DOMAIN_STYLES: dict[str, DomainStyle] = {
    # Source: every colour about equally likely, many solid garments.
    "source": DomainStyle(
        colour_weights=_UNIFORM_COLOURS,
        pattern_weights={"solid": 0.4, "stripes": 0.2, "checks": 0.2, "logo": 0.2},
        lower_weights={"trousers": 0.6, "shorts": 0.25, "skirt": 0.15},
        bag_weights={"none": 0.3, "backpack": 0.3, "handbag": 0.2, "shoulder bag": 0.2},
        accessory_weights={"none": 0.4, "cap": 0.15, "beanie": 0.15, "glasses": 0.15,
                           "scarf": 0.15},
    ),
    # Target: commuter clothing, dominated by dark and muted colours; more bags and patterns.
    "target": DomainStyle(
        colour_weights={"black": 3.0, "grey": 2.5, "blue": 2.5, "white": 2.0, "brown": 1.0,
                        "red": 0.5, "green": 0.5, "yellow": 0.3, "pink": 0.3, "purple": 0.3},
        pattern_weights={"solid": 0.25, "stripes": 0.25, "checks": 0.25, "logo": 0.25},
        lower_weights={"trousers": 0.7, "shorts": 0.15, "skirt": 0.15},
        bag_weights={"none": 0.2, "backpack": 0.4, "handbag": 0.2, "shoulder bag": 0.2},
        accessory_weights={"none": 0.3, "cap": 0.2, "beanie": 0.1, "glasses": 0.2,
                           "scarf": 0.2},
        woman_prob=0.4,
    ),
    # Captioned single-camera sets: broad, uniform frequencies.
    "synthpedes": DomainStyle(
        colour_weights=_UNIFORM_COLOURS,
        pattern_weights={p: 1.0 for p in PATTERNS},
        lower_weights={"trousers": 0.5, "shorts": 0.25, "skirt": 0.25},
        bag_weights={b: 1.0 for b in BAGS},
        accessory_weights={a: 1.0 for a in ACCESSORIES},
    ),
    "cuhkpedes": DomainStyle(
        colour_weights=_UNIFORM_COLOURS,
        pattern_weights={"solid": 0.4, "stripes": 0.2, "checks": 0.2, "logo": 0.2},
        lower_weights={"trousers": 0.6, "shorts": 0.2, "skirt": 0.2},
        bag_weights={b: 1.0 for b in BAGS},
        accessory_weights={a: 1.0 for a in ACCESSORIES},
    ),
}


def _choice(rng: np.random.Generator, weights: dict[str, float], exclude: str = "") -> str:
  names = [n for n in weights if n != exclude]
  p = np.array([weights[n] for n in names], dtype=np.float64)
  return names[int(rng.choice(len(names), p=p / p.sum()))]


def sample_identity(rng: np.random.Generator, domain: str, key: str) -> Identity:
  """Draws one identity from the attribute frequencies of `domain`."""
  if domain not in DOMAIN_STYLES:
    raise KeyError(f"unknown domain {domain!r}; expected one of {sorted(DOMAIN_STYLES)}")
  st = DOMAIN_STYLES[domain]
  gender = "woman" if rng.random() < st.woman_prob else "man"
  if gender == "woman":
    hair_style = _choice(rng, {"short": 0.2, "long": 0.5, "ponytail": 0.3, "bald": 0.0})
    lower = _choice(rng, st.lower_weights)
    width = rng.uniform(0.82, 1.08)
    height = rng.uniform(0.88, 1.0)
  else:
    hair_style = _choice(rng, {"short": 0.7, "long": 0.1, "ponytail": 0.05, "bald": 0.15})
    lower = _choice(rng, {k: v for k, v in st.lower_weights.items() if k != "skirt"})
    width = rng.uniform(0.92, 1.25)
    height = rng.uniform(0.94, 1.06)
  upper_colour = _choice(rng, st.colour_weights)
  accessory = _choice(rng, st.accessory_weights)
  return Identity(
      key=key,
      gender=gender,
      width=float(width),
      height=float(height),
      skin=int(rng.integers(len(SKIN_TONES))),
      hair_style=hair_style,
      hair_colour=_choice(rng, {"black": 3, "brown": 3, "blonde": 1.5, "grey": 1, "red": 0.5}),
      upper_type=_choice(rng, {t: 1.0 for t in UPPER_TYPES}),
      upper_colour=upper_colour,
      upper_pattern=_choice(rng, st.pattern_weights),
      pattern_colour=_choice(rng, _UNIFORM_COLOURS, exclude=upper_colour),
      lower_type=lower,
      lower_colour=_choice(rng, st.colour_weights),
      shoes_colour=_choice(rng, {c: 1.0 for c in SHOE_COLOURS}),
      bag=_choice(rng, st.bag_weights),
      bag_colour=_choice(rng, _UNIFORM_COLOURS),
      accessory=accessory,
      accessory_colour=_choice(rng, _UNIFORM_COLOURS),
  )


class IdentityPool:
  """Samples identities whose signatures are unique across every set of the benchmark."""

  def __init__(self, seed: int):
    self._rng = np.random.default_rng([seed, 0x1D])
    self._seen: set[tuple] = set()

  def sample(self, domain: str, key: str) -> Identity:
    for _ in range(1000):
      ident = sample_identity(self._rng, domain, key)
      if ident.signature() not in self._seen:
        self._seen.add(ident.signature())
        return ident
    raise RuntimeError(f"could not draw a new identity for {key!r}: attribute space exhausted")


def visible_attributes(ident: Identity, view: str) -> dict[str, str]:
  """What a viewer (or a captioner) can see of `ident` from `view`.

  A logo is printed on the front only; glasses are seen from the front or the side; from the
  back a backpack is obvious, from the front only its straps are (captioners still name it).
  """
  if view not in VIEWS:
    raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
  pattern = ident.upper_pattern
  if pattern == "logo" and view != "front":
    pattern = "solid"
  accessory = ident.accessory
  if accessory == "glasses" and view == "back":
    accessory = "none"
  return {
      "gender": ident.gender,
      "hair_style": ident.hair_style,
      "hair_colour": ident.hair_colour,
      "upper_type": ident.upper_type,
      "upper_colour": ident.upper_colour,
      "upper_pattern": pattern,
      "pattern_colour": ident.pattern_colour,
      "lower_type": ident.lower_type,
      "lower_colour": ident.lower_colour,
      "shoes_colour": ident.shoes_colour,
      "bag": ident.bag,
      "bag_colour": ident.bag_colour,
      "accessory": accessory,
      "accessory_colour": ident.accessory_colour,
      "view": view,
  }
