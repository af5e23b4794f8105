"""A tiny served world for the service tests: synthetic vehicle crops, tiny random pose + ReID checkpoints, and an
index of the crops' features with cameras and times (built through ``pamtri embed``'s gallery format)."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.conftest import write_tiny_pose_checkpoint, write_tiny_reid_checkpoint

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC: the first gallery image's time; each next one a minute later
CAMERAS = 3


@dataclass
class World:
    root: Path
    pose: Path
    reid: Path
    images: list[Path]   # the gallery crops, in index order (image id = position)
    cameras: list[int]   # image i: camera i % CAMERAS
    times: list[float]   # image i: T0 + 60 i
    index: Path          # the pristine index; tests that add copy it first (copy_index)


def make_world(root: Path, n: int = 12) -> World:
    """``n`` synthetic 64-px crops (4 per vehicle), embedded with tiny random weights and indexed (flat, cosine)."""
    from pamtri.pipeline.gallery import ImageSource, embed_images, gallery_bytes, gallery_header
    from pamtri.pipeline.index import build_index
    from pamtri.pipeline.infer import Pipeline
    from pamtri.pipeline.synth.dataset import generate
    generate(root / "synth", seed=3, ids=max(2, n // 4), images_per_id=4, size=64, style="realistic", cameras=2,
             test_fraction=0.5, progress=False)
    found, seen = [], set()
    for f in sorted((root / "synth").rglob("*.jpg")):  # query crops are also test crops: each picture once
        if f.read_bytes() not in seen:
            seen.add(f.read_bytes())
            found.append(f)
    (root / "gallery").mkdir()
    images = [Path(shutil.copy(f, root / "gallery" / f"car{i:02d}.jpg")) for i, f in enumerate(found[:n])]
    pose = write_tiny_pose_checkpoint(root / "pose.pt")
    reid = root / "reid.pt"
    write_tiny_reid_checkpoint(reid, heatmaps=True, segments=False, keypoints=True)
    pipe = Pipeline.from_weights(pose, reid, device="cpu", precision="fp32", batch_size=8)
    source = ImageSource(root / "gallery", [p.name for p in images], {})
    arrays = embed_images(pipe, source)
    cams = [i % CAMERAS for i in range(len(images))]
    times = [T0 + 60.0 * i for i in range(len(images))]
    arrays.update(cameras=np.asarray(cams, np.int64), timestamps=np.asarray(times))
    (root / "gallery.npz").write_bytes(gallery_bytes(gallery_header(pose, reid), arrays))
    build_index([root / "gallery.npz"], root / "index" / "city.faiss").close()
    return World(root, pose, reid, images, cams, times, root / "index" / "city.faiss")


def copy_index(world: World, dest: Path) -> Path:
    """A copy of the world's index (FAISS file and metadata) under ``dest``, to add to."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in world.index.parent.iterdir():
        if not f.name.startswith("."):
            shutil.copy(f, dest / f.name)
    return dest / world.index.name


def tiny_pipeline(world: World):
    from pamtri.pipeline.infer import Pipeline
    return Pipeline.from_weights(world.pose, world.reid, device="cpu", precision="fp32", batch_size=8)
