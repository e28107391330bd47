"""Shows what the text-guided decoder fills in (the paper's Figure 3): original / masked /
reconstructed, with the caption the decoder read.

  python -m retext_jax.tools.visualize_reconstruction --workdir workdirs/demo \
      --dataset cuhkpedes:/data/CUHK-PEDES:test --out rec.png --num 4

For each of `--num` captioned images (drawn with `--seed`), `num_masked` random patches are hidden
(grey in the middle panel); the right panel keeps the visible patches and shows the decoder's
prediction in the masked ones. Images are shown as the model sees them (resized by the eval
pipeline), enlarged by `--scale` without smoothing so patches stay aligned.

The decoder is trained on MAE's norm_pix targets (each patch standardised by its own mean and
std, `losses.normalized_patch_targets`), so a prediction carries a patch's structure and colour
contrasts but not its overall level. `--pixel_stats patch` (the usual MAE display) puts each
masked patch back at the mean/std of the original patch it replaces; `--pixel_stats visible`
uses the average mean/std of the image's visible patches, so nothing of the hidden patch leaks
into the picture.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import textwrap

import numpy as np

from input_pipeline import masking
from retext_jax import errors
from retext_jax.methods import base
from retext_jax.tools import common

MASK_GREY = (128, 128, 128)  # masked patches in the middle panel
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
PANELS = ("original", "masked", "reconstructed")
MAX_CAPTION_LINES = 8
NORM_PIX_EPS = 1e-6  # as losses.normalized_patch_targets


@dataclasses.dataclass(frozen=True)
class Layout:
  """Geometry of the sheet: one block per image (three panels side by side, caption below)."""

  panel_h: int
  panel_w: int
  caption_lines: int = 1
  gap: int = 10  # between blocks and around the sheet
  inner_gap: int = 4  # between the panels of a block
  title_h: int = 14  # panel titles above the panels
  line_h: int = 13  # caption line height

  @property
  def block_w(self) -> int:
    return len(PANELS) * self.panel_w + (len(PANELS) - 1) * self.inner_gap

  def panel_origin(self, sample: int, panel: int) -> tuple[int, int]:
    """(x, y) of the top-left pixel of panel `panel` (0 original, 1 masked, 2 reconstructed)."""
    x = self.gap + sample * (self.block_w + self.gap) + panel * (self.panel_w + self.inner_gap)
    return x, self.gap + self.title_h

  def caption_origin(self, sample: int) -> tuple[int, int]:
    return self.gap + sample * (self.block_w + self.gap), self.gap + self.title_h + \
        self.panel_h + 4

  def size(self, num: int) -> tuple[int, int]:
    """(width, height) of a sheet of `num` blocks."""
    height = self.gap + self.title_h + self.panel_h + 4 + self.caption_lines * self.line_h
    return self.gap + num * (self.block_w + self.gap), height + self.gap


def unpatchify(patches: np.ndarray, patch_size: int, height: int, width: int) -> np.ndarray:
  """[B, N, p*p*3] -> [B, H, W, 3]: the exact inverse of the loss's `losses.patchify`."""
  from retext_jax import losses

  return np.asarray(losses.unpatchify(np.asarray(patches), patch_size, height, width))


def patchify(images: np.ndarray, patch_size: int) -> np.ndarray:
  """[B, H, W, 3] -> [B, N, p*p*3], how the training loss cuts its targets."""
  from retext_jax import losses

  return np.asarray(losses.patchify(np.asarray(images), patch_size))


def mask_pixels(patch_mask: np.ndarray, patch_size: int, height: int, width: int) -> np.ndarray:
  """bool [B, H, W]: True on the pixels of masked patches (row-major patch order)."""
  b, n = patch_mask.shape
  full = np.broadcast_to(np.asarray(patch_mask, np.float32)[..., None],
                         (b, n, patch_size * patch_size))
  return unpatchify(full, patch_size, height, width)[..., 0] > 0.5


def predicted_patches(images: np.ndarray, pred: np.ndarray, patch_mask: np.ndarray,
                      patch_size: int, norm_pix: bool = True, pixel_stats: str = "patch"
                      ) -> np.ndarray:
  """The decoder's output [B, N, p*p*3] mapped back to normalised-image values.

  With norm_pix targets the output is a standardised patch; `pixel_stats` picks the mean/std
  that undo the standardisation: each original patch's ("patch") or the visible patches' average
  ("visible")."""
  pred = np.asarray(pred, np.float32)
  if not norm_pix:
    return pred
  target = patchify(images, patch_size).astype(np.float32)
  mean = target.mean(-1, keepdims=True)
  std = np.sqrt(target.var(-1, ddof=1, keepdims=True) + NORM_PIX_EPS)
  if pixel_stats == "visible":
    vis = ~np.asarray(patch_mask, bool)[..., None]
    count = np.maximum(vis.sum(1, keepdims=True), 1)
    mean = np.broadcast_to((mean * vis).sum(1, keepdims=True) / count, mean.shape)
    std = np.broadcast_to((std * vis).sum(1, keepdims=True) / count, std.shape)
  elif pixel_stats != "patch":
    raise errors.ConfigError(f"--pixel_stats must be 'patch' or 'visible', got {pixel_stats!r}")
  return pred * std + mean


def to_uint8(images: np.ndarray, mean, std) -> np.ndarray:
  """Normalised images -> displayable uint8 ((x * std + mean) * 255, clipped)."""
  x = (np.asarray(images, np.float32) * np.asarray(std, np.float32)
       + np.asarray(mean, np.float32)) * 255.0
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def panels(images: np.ndarray, pred: np.ndarray, patch_mask: np.ndarray, patch_size: int,
           mean, std, norm_pix: bool = True, pixel_stats: str = "patch"
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """uint8 [B, H, W, 3] original, masked (grey patches) and reconstructed (visible patches from
  the original, masked ones predicted) images."""
  _, h, w, _ = images.shape
  original = to_uint8(images, mean, std)
  hidden = mask_pixels(patch_mask, patch_size, h, w)[..., None]
  masked = np.where(hidden, np.asarray(MASK_GREY, np.uint8), original)
  pred = predicted_patches(images, pred, patch_mask, patch_size, norm_pix, pixel_stats)
  predicted = to_uint8(unpatchify(pred, patch_size, h, w), mean, std)
  return original, masked, np.where(hidden, predicted, original)


def choose(num_records: int, num: int, num_patches: int, num_masked: int, seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
  """(record positions [n] sorted, patch_mask bool [n, N]) from one `default_rng(seed)`."""
  rng = np.random.default_rng(seed)
  picked = np.sort(rng.choice(num_records, min(num, num_records), replace=False))
  return picked, masking.random_patch_mask(rng, len(picked), num_patches, num_masked)


def load_images(records, trained, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(normalised images [n, H, W, 3] exactly as the eval pipeline makes them, record positions)."""
  from input_pipeline import eval_pipeline
  from retext_jax import data

  imgs, index = [], []
  for batch in eval_pipeline.make_eval_iterator(records, data.input_config(trained.config),
                                                batch_size):
    imgs.append(batch["image"][batch["valid"]])
    index.append(batch["index"][batch["valid"]])
  return np.concatenate(imgs).astype(np.float32), np.concatenate(index)


def draw_sheet(original: np.ndarray, masked: np.ndarray, reconstructed: np.ndarray,
               captions: list[str], scale: int):
  """PIL image: per image a block of three panels (enlarged `scale` times) and its caption."""
  from PIL import Image, ImageDraw, ImageFont

  n, h, w, _ = original.shape
  font = ImageFont.load_default()
  probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  layout = Layout(h * scale, w * scale)
  char_w = probe.textlength("abcdefghijklmnopqrstuvwxyz ", font=font) / 27
  width = max(8, int(layout.block_w / max(char_w, 1.0)))
  wrapped = []
  for c in captions:
    lines = textwrap.wrap(" ".join(c.split()), width) or [""]
    if len(lines) > MAX_CAPTION_LINES:
      lines = lines[:MAX_CAPTION_LINES]
      lines[-1] = lines[-1][: max(0, width - 3)] + "..."
    wrapped.append(lines)
  layout = dataclasses.replace(layout, caption_lines=max(len(lines) for lines in wrapped))

  sheet = Image.new("RGB", layout.size(n), WHITE)
  draw = ImageDraw.Draw(sheet)
  for i in range(n):
    for j, (title, img) in enumerate(zip(PANELS, (original, masked, reconstructed), strict=True)):
      x, y = layout.panel_origin(i, j)
      draw.text((x, y - layout.title_h + 1), title, fill=BLACK, font=font)
      sheet.paste(Image.fromarray(img[i]).resize((w * scale, h * scale), Image.NEAREST), (x, y))
    x, y = layout.caption_origin(i)
    for k, line in enumerate(wrapped[i]):
      draw.text((x, y + k * layout.line_h), line, fill=BLACK, font=font)
  return sheet


def main(argv: list[str] | None = None) -> int:
  return common.run(_main, argv)


def _main(argv: list[str] | None) -> int:
  p = common.parser("visualize_reconstruction", __doc__)
  common.add_model_args(p)
  p.add_argument("--dataset", required=True, metavar="READER:ROOT[:SPLIT]",
                 help="captioned images, e.g. cuhkpedes:/data/CUHK-PEDES:test")
  p.add_argument("--out", required=True, help="PNG file to write")
  p.add_argument("--num", type=int, default=4, help="images to show")
  p.add_argument("--seed", type=int, default=0, help="seed of the image draw and the masks")
  p.add_argument("--mask_ratio", type=float, default=None,
                 help="share of patches hidden (default: config.input.mask_ratio)")
  p.add_argument("--pixel_stats", default="patch", choices=("patch", "visible"),
                 help="mean/std that undo the norm_pix standardisation of a predicted patch")
  p.add_argument("--scale", type=int, default=0,
                 help="enlargement of the panels (0: about 256 pixels high)")
  args = p.parse_args(argv)
  if not args.out.lower().endswith(".png"):
    raise errors.ConfigError(f"--out {args.out}: expected a .png file name")
  if args.num < 1 or args.scale < 0:
    raise errors.ConfigError("--num must be at least 1 and --scale at least 0")

  records = [r for r in common.records_from_dataset(args.dataset, "test") if r.captions]
  if not records:
    raise errors.DataError(f"--dataset {args.dataset}: no record has a caption; reconstruction "
                           "reads one (use a captioned reader, e.g. cuhkpedes:ROOT:test)")
  trained = common.load_model(args)
  if not trained.offers(base.RECONSTRUCT):
    raise errors.ConfigError(f"--workdir {args.workdir}: the {trained.method.name} model has "
                             "no reconstruction decoder (ReText trained with loss.lambda_rec=0, "
                             "or another method)")
  mcfg = trained.method.model_config
  p_size, (rows, cols) = mcfg.vit.patch_size, mcfg.vit.grid
  h, w = trained.image_size
  if (rows * p_size, cols * p_size) != (h, w) or mcfg.vit.patch_stride != p_size:
    raise errors.ConfigError(f"--workdir {args.workdir}: patches {p_size}/stride "
                             f"{mcfg.vit.patch_stride} do not tile the {h}x{w} image")
  ratio = float(trained.config.input.mask_ratio if args.mask_ratio is None else args.mask_ratio)
  num_masked = masking.num_masked(ratio, mcfg.vit.num_patches)
  if not 0 < num_masked < mcfg.vit.num_patches:
    raise errors.ConfigError(f"--mask_ratio {ratio}: masks {num_masked} of "
                             f"{mcfg.vit.num_patches} patches; it must hide at least one and "
                             "keep at least one")
  if num_masked != mcfg.num_masked:  # a static shape of the model, not of its parameters
    trained = dataclasses.replace(trained, method=trained.method.with_num_masked(num_masked))

  picked, patch_mask = choose(len(records), args.num, mcfg.vit.num_patches, num_masked, args.seed)
  chosen = [records[i] for i in picked]
  images, index = load_images(chosen, trained, args.batch_size)
  if not len(index):
    raise errors.DataError(f"--dataset {args.dataset}: none of the chosen images could be read")
  chosen, patch_mask = [chosen[i] for i in index], patch_mask[index]
  captions = [r.captions[0] for r in chosen]
  pred = np.concatenate([
      trained.reconstruct(images[s:s + args.batch_size], captions[s:s + args.batch_size],
                          patch_mask[s:s + args.batch_size])
      for s in range(0, len(chosen), args.batch_size)])
  norm_pix = bool(trained.config.loss.get("norm_pix", True))  # what train_step trains with
  original, masked, rec = panels(images, pred, patch_mask, p_size, trained.config.input.mean,
                                 trained.config.input.std, norm_pix, args.pixel_stats)
  scale = args.scale or max(1, round(256 / h))
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  draw_sheet(original, masked, rec, captions, scale).save(args.out)
  for r, m in zip(chosen, patch_mask, strict=True):
    print(f"{os.path.basename(r.path)}: masked patches {np.flatnonzero(m).tolist()}")
  print(f"wrote {args.out} ({len(chosen)} images, {num_masked}/{mcfg.vit.num_patches} patches "
        f"masked, scale {scale})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
