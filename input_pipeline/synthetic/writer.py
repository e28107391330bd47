"""The plan of a benchmark: every image job, every annotation file, in the real on-disk layouts.

Planning is sequential and cheap (no pixels); rendering the jobs is the expensive, parallel part.
Layouts written under the output folder:

  source_market/, target_market/   Market-1501: bounding_box_train/, query/, bounding_box_test/
                                   with `PPPP_cCsS_FFFFFF_BB.jpg` names (+ identities.json and
                                   a captions.json sidecar: template captions of each person)
  SYNTH-PEDES/                     synthpedes_dataset.json, Part*/<id>/<k>.jpg
                                   (+ caption_errors.json sidecar)
  CUHK-PEDES/                      reid_raw.json, imgs/cam_a|cam_b/*.jpg (+ identities.json)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from input_pipeline.synthetic import captions as cap
from input_pipeline.synthetic.attributes import VIEWS, Identity, IdentityPool, visible_attributes
from input_pipeline.synthetic.cameras import camera_specs
from input_pipeline.synthetic.presets import Preset
from input_pipeline.synthetic.render import DISTRACTOR, JUNK, ImageJob
from input_pipeline.synthetic.scenes import SCENE_STYLES

GENERATOR_VERSION = "2"  # 2: captions.json sidecars for the Market-layout domains
MARKET_DOMAINS = (("source", "source_market"), ("target", "target_market"))
SYNTH_DIR, CUHK_DIR = "SYNTH-PEDES", "CUHK-PEDES"
SET_CODES = {"source": 10, "target": 20, "synthpedes": 30, "cuhkpedes": 40}


@dataclasses.dataclass
class Plan:
  jobs: list[ImageJob] = dataclasses.field(default_factory=list)
  json_files: dict[str, object] = dataclasses.field(default_factory=dict)  # relpath -> content
  sets: dict[str, dict] = dataclasses.field(default_factory=dict)  # manifest counts
  sheet_rows: list[tuple[str, list[str | None]]] = dataclasses.field(default_factory=list)


def _plan_market(plan: Plan, domain: str, folder: str, p: Preset, seed: int,
                 pool: IdentityPool) -> None:
  cams = camera_specs(domain, p.num_cameras, seed)
  code = SET_CODES[domain]
  rng = np.random.default_rng([seed, code, 0x91A])
  n_train, n_test = getattr(p, f"{domain}_train_ids"), getattr(p, f"{domain}_test_ids")
  n = n_train + n_test
  # Market pids are sparse and the train and test ids interleave; keep both properties.
  pids = np.sort(rng.choice(np.arange(1, 3 * n + 2), size=n, replace=False))
  is_test = np.zeros(n, bool)
  is_test[rng.choice(n, size=n_test, replace=False)] = True
  frames = {c.index: int(rng.integers(100, 2000)) for c in cams}
  used: set[str] = set()
  identities: dict[str, dict] = {}
  images: dict[str, dict] = {}
  counts = {"train_images": 0, "query_images": 0, "gallery_images": 0}

  def add(sub: str, pid_str: str, cam_idx: int, seed_tuple: tuple[int, ...], **job_kw) -> str:
    cam = cams[cam_idx]
    while True:  # unique names even if a box index repeats
      frames[cam.index] += int(rng.integers(5, 80))
      name = (f"{pid_str}_c{cam.index}s{int(rng.integers(1, 7))}_{frames[cam.index]:06d}_"
              f"{int(rng.integers(1, 4)):02d}.jpg")
      if name not in used:
        break
    used.add(name)
    rel = f"{folder}/{sub}/{name}"
    plan.jobs.append(ImageJob(path=rel, camera=cam, seed=seed_tuple, **job_kw))
    images[f"{sub}/{name}"] = {"pid": pid_str, "view": job_kw.get("view", "")}
    return rel

  def person(ident: Identity, i: int, k: int, cam_idx: int, sub: str) -> str:
    view = cams[cam_idx].sample_view(rng)
    return add(sub, f"{pids[i]:04d}", cam_idx, (seed, code, i, k), ident=ident, view=view,
               facing_left=bool(rng.random() < 0.5))

  rows = []
  for i in range(n):
    pid = int(pids[i])
    ident = pool.sample(domain, f"{domain}/{pid:04d}")
    split = "test" if is_test[i] else "train"
    identities[f"{pid:04d}"] = {"key": ident.key, "split": split, "attributes": ident.to_dict()}
    per_cam: list[str | None] = [None] * p.num_cameras
    if split == "train":
      k_cams = int(rng.integers(2, min(p.num_cameras, 4) + 1))
      chosen = rng.choice(p.num_cameras, size=k_cams, replace=False)
      for k in range(p.train_images_per_id):
        c = int(chosen[k % k_cams])
        rel = person(ident, i, k, c, "bounding_box_train")
        per_cam[c] = per_cam[c] or rel
      counts["train_images"] += p.train_images_per_id
    else:
      qcams = [int(c) for c in rng.choice(p.num_cameras, size=p.query_cameras_per_id,
                                          replace=False)]
      others = [c for c in range(p.num_cameras) if c not in qcams]
      for k, c in enumerate(qcams):
        rel = person(ident, i, k, c, "query")
        per_cam[c] = per_cam[c] or rel
      for k in range(p.gallery_images_per_id):
        c = others[int(rng.integers(len(others)))] if k == 0 else int(
            rng.integers(p.num_cameras))
        rel = person(ident, i, 100 + k, c, "bounding_box_test")
        per_cam[c] = per_cam[c] or rel
      counts["query_images"] += len(qcams)
      counts["gallery_images"] += p.gallery_images_per_id
      if len(rows) < 3:
        rows.append((f"{domain} {pid:04d}", per_cam))
  for j in range(p.distractors + p.junk):
    kind, pid_str = (DISTRACTOR, "0000") if j < p.distractors else (JUNK, "-1")
    add("bounding_box_test", pid_str, int(rng.integers(p.num_cameras)), (seed, code + 1, j, 0),
        kind=kind)
  counts["gallery_images"] += p.distractors + p.junk
  plan.sheet_rows.extend(rows)
  plan.json_files[f"{folder}/identities.json"] = annotations = {
      "domain": domain, "identities": identities, "images": images}
  # What a VLM captioner would write, from the annotations (retext_jax.tools.caption --rules).
  plan.json_files[f"{folder}/captions.json"] = cap.annotation_captions(annotations)
  plan.sets[folder] = {
      "layout": "market1501", "domain": domain, "cameras": p.num_cameras,
      "train_ids": n_train, "test_ids": n_test, "distractor_images": p.distractors,
      "junk_images": p.junk, **counts,
  }


def _plan_synthpedes(plan: Plan, p: Preset, seed: int, pool: IdentityPool,
                     error_rate: float) -> None:
  code = SET_CODES["synthpedes"]
  cam = camera_specs("synthpedes", 1, seed)[0]
  rng = np.random.default_rng([seed, code, 0x91A])
  records, sidecar = [], []
  n_captions = n_errors = 0
  sheet: list[str | None] = []
  for i in range(p.synth_ids):
    pid = i + 1
    ident = pool.sample("synthpedes", f"synthpedes/{pid}")
    # One tracklet per identity: one scene, mostly one view, small variation between frames.
    scene = (SCENE_STYLES[int(rng.integers(len(SCENE_STYLES)))], int(rng.integers(2**31)))
    base_view, facing = cam.sample_view(rng), bool(rng.random() < 0.5)
    part = 1 + i // p.synth_ids_per_part
    for k in range(int(rng.integers(p.synth_images_per_id[0], p.synth_images_per_id[1] + 1))):
      view = base_view if rng.random() < 0.75 else VIEWS[int(rng.integers(3))]
      rel = f"Part{part}/{pid}/{k + 1}.jpg"
      plan.jobs.append(ImageJob(path=f"{SYNTH_DIR}/{rel}", camera=cam, seed=(seed, code, i, k),
                                ident=ident, view=view, facing_left=facing, scene=scene))
      vis = visible_attributes(ident, view)
      crng = np.random.default_rng([seed, code, i, k, 0xCA9])
      caps = cap.make_captions(vis, crng, int(crng.integers(2, 4)), error_rate)
      records.append({"id": pid, "file_path": rel, "attributes": [cap.plip_attributes(vis)],
                      "captions": [c for c, _ in caps],
                      "prompt_caption": [cap.prompt_caption(vis)]})
      sidecar.append({"file_path": rel, "identity_key": ident.key, "visible": vis,
                      "errors": [e for _, e in caps]})
      n_captions += len(caps)
      n_errors += sum(e is not None for _, e in caps)
      if k == 0 and len(sheet) < p.num_cameras:
        sheet.append(f"{SYNTH_DIR}/{rel}")
  plan.sheet_rows.append(("SYNTH-PEDES", sheet))
  plan.json_files[f"{SYNTH_DIR}/synthpedes_dataset.json"] = records
  plan.json_files[f"{SYNTH_DIR}/caption_errors.json"] = {"caption_error_rate": error_rate,
                                                         "images": sidecar}
  plan.sets[SYNTH_DIR] = {"layout": "synthpedes", "ids": p.synth_ids, "images": len(records),
                          "captions": n_captions, "erroneous_captions": n_errors}


def _plan_cuhkpedes(plan: Plan, p: Preset, seed: int, pool: IdentityPool) -> None:
  code = SET_CODES["cuhkpedes"]
  cams = camera_specs("cuhkpedes", 2, seed)
  rng = np.random.default_rng([seed, code, 0x91A])
  n_train = max(1, int(round(p.cuhk_ids * 0.7)))
  n_val = max(1, int(round(p.cuhk_ids * 0.1)))
  records, keys = [], {}
  sheet: list[str | None] = []
  for i in range(p.cuhk_ids):
    pid = i + 1
    split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    ident = pool.sample("cuhkpedes", f"cuhkpedes/{pid}")
    keys[str(pid)] = ident.key
    for k in range(int(rng.integers(p.cuhk_images_per_id[0], p.cuhk_images_per_id[1] + 1))):
      cam = cams[k % 2]
      view = cam.sample_view(rng)
      rel = f"cam_{'ab'[k % 2]}/{pid:04d}_{k + 1}.jpg"
      plan.jobs.append(ImageJob(path=f"{CUHK_DIR}/imgs/{rel}", camera=cam,
                                seed=(seed, code, i, k), ident=ident, view=view,
                                facing_left=bool(rng.random() < 0.5)))
      crng = np.random.default_rng([seed, code, i, k, 0xCA9])
      texts = [c for c, _ in cap.make_captions(visible_attributes(ident, view), crng, 2, 0.0)]
      records.append({"split": split, "captions": texts, "file_path": rel, "id": pid,
                      "processed_tokens": [cap.tokenize(t) for t in texts]})
      if k == 0 and len(sheet) < p.num_cameras:
        sheet.append(f"{CUHK_DIR}/imgs/{rel}")
  plan.sheet_rows.append(("CUHK-PEDES", sheet))
  plan.json_files[f"{CUHK_DIR}/reid_raw.json"] = records
  plan.json_files[f"{CUHK_DIR}/identities.json"] = {"identities": keys}
  plan.sets[CUHK_DIR] = {
      "layout": "cuhkpedes", "ids": p.cuhk_ids, "images": len(records),
      "train_ids": n_train, "val_ids": n_val, "test_ids": p.cuhk_ids - n_train - n_val,
  }


def make_plan(p: Preset, seed: int, error_rate: float) -> Plan:
  """Every job and annotation file of the benchmark, in a fixed order."""
  plan = Plan()
  pool = IdentityPool(seed)
  for domain, folder in MARKET_DOMAINS:
    _plan_market(plan, domain, folder, p, seed, pool)
  _plan_synthpedes(plan, p, seed, pool, error_rate)
  _plan_cuhkpedes(plan, p, seed, pool)
  return plan


def manifest(p: Preset, seed: int, error_rate: float, plan: Plan) -> dict:
  config = dataclasses.asdict(p)
  config.pop("workers")  # does not change a single byte of the output
  return {
      "generator": "input_pipeline.synthetic",
      "generator_version": GENERATOR_VERSION,
      "preset": p.name,
      "seed": seed,
      "caption_error_rate": error_rate,
      "preset_config": config,
      "sets": plan.sets,
      "images": len(plan.jobs),
      "contact_sheet": "contact_sheet.png",
  }
