"""The ``cache_read`` and ``cache_disk`` rows: our memory-mapped cache vs the reference's 49 JPEGs per image."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from pamtri.data.images import read_image
from pamtri.pose.cache import Cache, CacheSpec, CacheWriter
from pamtri.pose.legacy import read_legacy_maps, write_legacy_maps
from pamtri.pose.segments import rasterise

from .harness import Row, du_bytes, make_row, timed
from .inputs import fake_pose_outputs


def _write_inputs(work: Path, n: int, size: int, rng: np.random.Generator) -> list[str]:
    """n random size x size images in work/images, their pose outputs as the reference's folders
    (work/heatmap_test, work/segment_test: 36 + 13 JPEGs per image) and as our cache (work/cache); their names."""

    heatmaps, kps = fake_pose_outputs(n, size, rng)
    names = [f"{i:04d}_c001_{i:08d}_0.jpg" for i in range(n)]
    images = work / "images"
    images.mkdir()
    for name in names:
        cv2.imwrite(str(images / name), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    segments = [rasterise(k, (size, size)) for k in kps]
    for i, name in enumerate(names):
        stem = Path(name).stem
        write_legacy_maps(work / "heatmap_test" / stem, heatmaps[i], segments[i].astype(bool),
                          segment_folder=work / "segment_test" / stem)
    spec = CacheSpec(weights_sha256="bench", pose_config={}, input_size=(256, 256), heatmap_size=(64, 64))
    writer = CacheWriter(work / "cache", names, spec)
    writer.build(lambda batch: (heatmaps[[names.index(b) for b in batch]], kps[[names.index(b) for b in batch]]),
                 progress=False)
    writer.finalise()
    return names


def _readers(work: Path, size: int) -> dict:
    """What one training sample reads, as functions of (index, name): 'image' (the RGB JPEG), 'ours' (cache
    heatmaps + keypoints, segments rasterised from them), 'reference' (36 heatmap + 13 segment JPEGs)."""
    cache = Cache(work / "cache")

    def pose_ours(i: int, name: str) -> None:
        hm, kp, _ = cache.raw(i)
        np.asarray(hm)
        rasterise(kp, (size, size))

    def pose_reference(i: int, name: str) -> None:
        stem = Path(name).stem
        read_legacy_maps(work / "heatmap_test" / stem, work / "segment_test" / stem)

    def image(i: int, name: str) -> None:
        read_image(work / "images" / name)

    return {"image": image, "ours": pose_ours, "reference": pose_reference}


def bench_cache(quick: bool) -> list[Row]:
    """Cache read speed and disk use: our memory-mapped cache vs the reference's 49 JPEGs per image."""
    n, size = (64, 256) if quick else (256, 256)
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="pamtri-bench-"))
    try:
        names = _write_inputs(work, n, size, rng)
        read = _readers(work, size)

        def over_all(*parts):
            """A pass over every sample doing ``parts`` (keys of ``read``) in order."""
            def run():
                for i, name in enumerate(names):
                    for part in parts:
                        read[part](i, name)
            return run

        t_ours = timed(over_all("image", "ours"), repeat=2)
        t_ref = timed(over_all("image", "reference"), repeat=2)
        t_pose_ours, t_pose_ref = timed(over_all("ours"), repeat=2), timed(over_all("reference"), repeat=2)
        t_img = timed(over_all("image"), repeat=2)
        ours_bytes = du_bytes([work / "cache"]) / n
        ref_bytes = du_bytes([work / "heatmap_test", work / "segment_test"]) / n
        note = (f"{n} images {size}x{size}: image + 36 heatmaps + 13 segments + keypoints; the RGB JPEG decode "
                f"both sides share runs at {n / t_img:.0f} img/s, which caps the ratio at "
                f"{t_ref / t_img:.1f}x; pose channels alone: {n / t_pose_ours:.0f} vs {n / t_pose_ref:.0f} "
                f"samples/s ({t_pose_ref / t_pose_ours:.1f}x)")
        return [make_row("cache_read", n / t_ours, n / t_ref, "samples/s", note=note),
                make_row("cache_disk", ours_bytes, ref_bytes, "bytes/img", note="du-counted bytes per image")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
