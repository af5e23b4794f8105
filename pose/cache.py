"""Stored pose-stage output: one cache per (data set split, pose weights), memory-mapped, resumable, checksummed.

The pipeline fills caches (pipeline/cachebuild.py); the ReID stage reads them like any other pose source.

Layout of a cache folder::

    manifest.json          written last: schema, pose weights checksum, pose config, sizes, chunk checksums
    names.txt              image names, one per line (the index)
    heatmaps.npy           (N, 36, h, w) uint8 (heatmap * 255) or float16, a w x h grid spanning each image
    keypoints.npy          (N, 36, 3) float32, x, y in original-image pixels, confidence
    segments.npy           optional (N, 13, S*S/8) uint8, bit-packed segment masks of S x S
    chunks/NNNNN.json      one commit record per finished chunk (its rows and SHA-256 of its bytes)

Building preallocates the arrays, fills them chunk by chunk and commits each chunk with an atomic
record. A killed build leaves uncommitted chunks, which the next run rebuilds; a committed chunk whose
bytes no longer match its checksum is rebuilt too. Ranks of a ``torchrun`` job build disjoint chunks
into the same preallocated files; rank 0 writes the manifest once every chunk is committed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pamtri.common.atomic import atomic_write_text
from pamtri.common.errors import CheckpointError, ConfigError, PamtriError
from pamtri.pose.result import PoseResult

from .keypoints import NUM_KEYPOINTS, NUM_SEGMENTS

log = logging.getLogger(__name__)

CACHE_SCHEMA = 1
HEATMAP_DTYPES = {"uint8": np.uint8, "float16": np.float16}

def rows_digest(arrays: dict[str, np.ndarray], rows: slice) -> str:
    """SHA-256 over the given rows of every array (in key order): a chunk's checksum."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(np.ascontiguousarray(arrays[key][rows]).tobytes())
    return h.hexdigest()


def _package_version() -> str:
    try:
        return version("pamtri")
    except Exception:  # pragma: no cover - running from a source tree without metadata
        return "unknown"


@dataclass(frozen=True)
class CacheSpec:
    """What a cache is built from; two caches with equal specs hold the same data. Sizes are (width, height)."""
    weights_sha256: str
    pose_config: dict
    input_size: tuple[int, int]          # pose network input (width, height) pixels; (0, 0): not from a model
    heatmap_size: tuple[int, int]        # the image-frame grid (width, height) cells
    heatmap_dtype: str = "uint8"
    segment_size: int = 0                # 0: segments derived from keypoints on read; S: stored packed S x S
    chunk_size: int = 256

    def __post_init__(self) -> None:
        if min(self.heatmap_size) <= 0:
            raise ConfigError(f"cache grid (--grid): cells per side must be positive, got {list(self.heatmap_size)}")

    def as_dict(self) -> dict:
        return {"weights_sha256": self.weights_sha256, "pose_config": self.pose_config,
                "input_size": list(self.input_size), "heatmap_size": list(self.heatmap_size),
                "heatmap_dtype": self.heatmap_dtype, "segment_size": self.segment_size,
                "chunk_size": self.chunk_size}


def _rebuild_hint(folder: Path) -> str:
    return f"rebuild it with `pamtri cache build ... --out {folder} --rebuild` (or delete the folder)"


def quantise(heatmaps: np.ndarray, dtype: str) -> np.ndarray:
    """Heatmaps (float, nominally [0, 1]) -> storage dtype: uint8 = round(clip * 255), float16 as is."""
    if dtype == "uint8":
        return np.round(np.clip(heatmaps, 0.0, 1.0) * 255.0).astype(np.uint8)
    return heatmaps.astype(np.float16)


def dequantise(stored: np.ndarray) -> np.ndarray:
    """Storage dtype -> float32 heatmaps."""
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) * np.float32(1.0 / 255.0)
    return stored.astype(np.float32)


def pack_segments(segments: np.ndarray) -> np.ndarray:
    """(..., 13, S, S) {0, 1} -> (..., 13, S*S/8) uint8 bit-packed."""
    flat = segments.reshape(segments.shape[:-2] + (-1,)).astype(bool)
    return np.packbits(flat, axis=-1)


def unpack_segments(packed: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`pack_segments`: -> (..., 13, S, S) uint8 {0, 1}."""
    flat = np.unpackbits(packed, axis=-1, count=size * size)
    return flat.reshape(packed.shape[:-1] + (size, size))


class CacheWriter:
    """Builds (or resumes building) a cache folder for ``names`` with ``spec``."""

    def __init__(self, folder: str | os.PathLike, names: Sequence[str], spec: CacheSpec, rebuild: bool = False):
        self.folder = Path(folder)
        self.names = list(names)
        self.spec = spec
        if len(set(self.names)) != len(self.names):
            dup = next(n for n in self.names if self.names.count(n) > 1)
            raise PamtriError(f"{self.folder}: image name {dup!r} appears twice in the split")
        self.chunk_dir = self.folder / "chunks"
        self._prepare(rebuild)

    # -- set-up -----------------------------------------------------------------------------------
    def _plan(self) -> dict:
        return {"schema": CACHE_SCHEMA, "spec": self.spec.as_dict(), "count": len(self.names),
                "names_sha256": hashlib.sha256("\n".join(self.names).encode()).hexdigest()}

    def _prepare(self, rebuild: bool) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        plan_path = self.folder / "plan.json"
        plan = self._plan()
        if plan_path.exists() and not rebuild:
            try:
                old = json.loads(plan_path.read_text())
            except (ValueError, OSError) as exc:
                raise CheckpointError(f"{plan_path}: unreadable build plan ({exc}); {_rebuild_hint(self.folder)}"
                                      ) from None
            if old != plan:
                raise CheckpointError(
                    f"{self.folder}: holds a cache (or a partial build) for other inputs "
                    f"(different pose weights, settings or image list); {_rebuild_hint(self.folder)}")
        elif plan_path.exists() and rebuild:
            for f in self.folder.iterdir():
                if f.name in ("manifest.json", "plan.json", "names.txt") or f.suffix == ".npy":
                    f.unlink()
            if self.chunk_dir.exists():
                for f in self.chunk_dir.iterdir():
                    f.unlink()
        self.chunk_dir.mkdir(exist_ok=True)
        n, (w, h) = len(self.names), self.spec.heatmap_size
        self.arrays = {
            "heatmaps": self._open_array("heatmaps.npy", (n, NUM_KEYPOINTS, h, w),
                                         HEATMAP_DTYPES[self.spec.heatmap_dtype]),
            "keypoints": self._open_array("keypoints.npy", (n, NUM_KEYPOINTS, 3), np.float32),
        }
        if self.spec.segment_size:
            s = self.spec.segment_size
            self.arrays["segments"] = self._open_array("segments.npy", (n, NUM_SEGMENTS, (s * s + 7) // 8), np.uint8)
        if not plan_path.exists():
            atomic_write_text(self.folder / "names.txt", "\n".join(self.names) + "\n")
            atomic_write_text(plan_path, json.dumps(plan, indent=1))

    def _open_array(self, name: str, shape: tuple, dtype) -> np.memmap:
        path = self.folder / name
        if path.exists():
            try:
                arr = np.load(path, mmap_mode="r+")
                if arr.shape == shape and arr.dtype == np.dtype(dtype):
                    return arr
            except (ValueError, OSError):
                pass
            log.warning("%s: unreadable or wrong shape; recreating it", path)
            path.unlink()
        return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)

    # -- chunks -----------------------------------------------------------------------------------
    @property
    def num_chunks(self) -> int:
        return (len(self.names) + self.spec.chunk_size - 1) // self.spec.chunk_size

    def chunk_rows(self, i: int) -> slice:
        c = self.spec.chunk_size
        return slice(i * c, min((i + 1) * c, len(self.names)))

    def _chunk_digest(self, i: int) -> str:
        return rows_digest(self.arrays, self.chunk_rows(i))

    def _record_path(self, i: int) -> Path:
        return self.chunk_dir / f"{i:05d}.json"

    def chunk_done(self, i: int, verify: bool = True) -> bool:
        """True when chunk i has a commit record and (with verify) its bytes match the recorded checksum."""
        path = self._record_path(i)
        if not path.exists():
            return False
        try:
            rec = json.loads(path.read_text())
        except (ValueError, OSError):
            return False
        rows = self.chunk_rows(i)
        if rec.get("start") != rows.start or rec.get("stop") != rows.stop:
            return False
        if verify and rec.get("sha256") != self._chunk_digest(i):
            log.warning("%s: chunk %d does not match its checksum; rebuilding it", self.folder, i)
            path.unlink()
            return False
        return True

    def write_chunk(self, i: int, heatmaps: np.ndarray, keypoints: np.ndarray,
                    segments: np.ndarray | None = None) -> None:
        """Store chunk i's rows, flush them to disk, then commit the chunk with an atomic record."""
        rows = self.chunk_rows(i)
        n = rows.stop - rows.start
        if heatmaps.shape[0] != n or keypoints.shape != (n, NUM_KEYPOINTS, 3):
            raise PamtriError(f"chunk {i}: producer returned {heatmaps.shape[0]} heatmaps / keypoints "
                              f"{keypoints.shape} for {n} images")
        finite = np.isfinite(heatmaps).reshape(n, -1).all(1) & np.isfinite(keypoints).reshape(n, -1).all(1)
        if not finite.all():
            name = self.names[rows.start + int(np.argmin(finite))]
            raise PamtriError(f"{self.folder}: the pose output for image {name!r} is not finite (NaN or infinity); "
                              "nothing of it was stored: check the pose weights")
        self.arrays["heatmaps"][rows] = quantise(heatmaps, self.spec.heatmap_dtype)
        self.arrays["keypoints"][rows] = keypoints.astype(np.float32)
        if "segments" in self.arrays:
            if segments is None:
                raise PamtriError(f"chunk {i}: this cache stores segments but none were given")
            self.arrays["segments"][rows] = pack_segments(segments)
        for arr in self.arrays.values():
            arr.flush()
        rec = {"chunk": i, "start": rows.start, "stop": rows.stop, "sha256": self._chunk_digest(i)}
        atomic_write_text(self._record_path(i), json.dumps(rec))

    def build(self, producer: Callable, rank: int = 0, world_size: int = 1, progress: bool = True) -> int:
        """Produce and commit every missing chunk assigned to ``rank``; returns the number built.

        ``producer(names) -> (heatmaps (n, 36, h, w) float32 in [0, 1], keypoints (n, 36, 3) float32)``.
        """
        mine = [i for i in range(self.num_chunks) if i % world_size == rank]
        todo = [i for i in mine if not self.chunk_done(i)]
        if len(todo) < len(mine):
            log.info("%s: resuming, %d of %d chunks already committed", self.folder, len(mine) - len(todo), len(mine))
        bar = tqdm(total=sum(self.chunk_rows(i).stop - self.chunk_rows(i).start for i in todo),
                   desc=f"cache {self.folder.name}", unit="img", disable=not progress or rank != 0)
        try:
            for i in todo:
                rows = self.chunk_rows(i)
                out = producer(self.names[rows])
                self.write_chunk(i, *out)
                bar.update(rows.stop - rows.start)
        finally:
            bar.close()  # ends the bar's line, also before an error message
        return len(todo)

    def finalise(self) -> Path:
        """Check every chunk is committed and intact, then write the manifest (rank 0 only)."""
        missing = [i for i in range(self.num_chunks) if not self.chunk_done(i)]
        if missing:
            raise PamtriError(f"{self.folder}: {len(missing)} chunk(s) not built yet (first: {missing[0]}); "
                              f"run the build again to finish it")
        records = [json.loads(self._record_path(i).read_text()) for i in range(self.num_chunks)]
        manifest = {
            "schema": CACHE_SCHEMA,
            "created_by": f"pamtri {_package_version()}",
            "count": len(self.names),
            "spec": self.spec.as_dict(),
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in self.arrays.items()},
            "chunks": [r["sha256"] for r in records],
        }
        path = self.folder / "manifest.json"
        atomic_write_text(path, json.dumps(manifest, indent=1))
        return path


class Cache:
    """Read access to a finished cache: one memory-map slice per sample, no decoding."""

    def __init__(self, folder: str | os.PathLike, expect_weights_sha256: str | None = None):
        self.folder = Path(folder)
        path = self.folder / "manifest.json"
        if not path.is_file():
            if (self.folder / "plan.json").is_file():
                raise CheckpointError(f"{self.folder}: the cache build has not finished; run "
                                      f"`pamtri cache build` again with the same arguments to complete it")
            raise CheckpointError(f"{self.folder}: not a pamtri cache (no manifest.json)")
        try:
            self.manifest = json.loads(path.read_text())
        except ValueError as exc:
            raise CheckpointError(f"{path}: unreadable manifest ({exc}); {_rebuild_hint(self.folder)}") from None
        if self.manifest.get("schema") != CACHE_SCHEMA:
            raise CheckpointError(f"{self.folder}: cache schema {self.manifest.get('schema')} is not the schema "
                                  f"this pamtri reads ({CACHE_SCHEMA}); {_rebuild_hint(self.folder)}")
        spec = self.manifest["spec"]
        if expect_weights_sha256 is not None and spec["weights_sha256"] != expect_weights_sha256:
            raise CheckpointError(
                f"{self.folder}: cache was built with other pose weights (sha256 {spec['weights_sha256'][:12]}..., "
                f"expected {expect_weights_sha256[:12]}...); {_rebuild_hint(self.folder)}")
        self.names = (self.folder / "names.txt").read_text().splitlines()
        self.index = {n: i for i, n in enumerate(self.names)}
        self.segment_size = int(spec.get("segment_size", 0))
        self.arrays = {}
        for key, info in self.manifest["arrays"].items():
            try:
                arr = np.load(self.folder / f"{key}.npy", mmap_mode="r")
            except (ValueError, OSError) as exc:
                raise CheckpointError(f"{self.folder / (key + '.npy')}: unreadable ({exc}); "
                                      f"{_rebuild_hint(self.folder)}") from None
            if list(arr.shape) != info["shape"] or str(arr.dtype) != info["dtype"]:
                raise CheckpointError(f"{self.folder / (key + '.npy')}: shape {arr.shape} / {arr.dtype} differs "
                                      f"from the manifest; {_rebuild_hint(self.folder)}")
            self.arrays[key] = arr
        if len(self.names) != self.manifest["count"]:
            raise CheckpointError(f"{self.folder}/names.txt: {len(self.names)} names for {self.manifest['count']} "
                                  f"entries; {_rebuild_hint(self.folder)}")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def grid(self) -> tuple[int, int]:
        """(width, height) cells of the image-frame heatmap grid, read from the stored array."""
        h, w = self.arrays["heatmaps"].shape[-2:]
        return int(w), int(h)

    def __contains__(self, name: str) -> bool:
        return name in self.index

    def position(self, name: str) -> int:
        """Row of image ``name``; a clear error when the image is not in this cache."""
        try:
            return self.index[name]
        except KeyError:
            raise PamtriError(f"{self.folder}: image {name!r} is not in this cache "
                              f"(built for {len(self.names)} images); rebuild it for this split") from None

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Stored arrays of row i without conversion: heatmaps, keypoints, packed segments or None."""
        seg = self.arrays.get("segments")
        return self.arrays["heatmaps"][i], self.arrays["keypoints"][i], None if seg is None else seg[i]

    def get(self, name_or_row: str | int) -> PoseResult:
        """One sample as a PoseResult (heatmaps float32 in [0, 1]; segments only when stored)."""
        i = self.position(name_or_row) if isinstance(name_or_row, str) else int(name_or_row)
        hm, kps, seg = self.raw(i)
        segments = None if seg is None else unpack_segments(np.asarray(seg), self.segment_size)
        return PoseResult(keypoints=np.array(kps), heatmaps=dequantise(np.asarray(hm)), segments=segments)

    def verify(self) -> list[int]:
        """Indices of chunks whose bytes no longer match the manifest's checksums."""
        chunk = self.manifest["spec"]["chunk_size"]
        return [i for i, digest in enumerate(self.manifest["chunks"])
                if rows_digest(self.arrays, slice(i * chunk, min((i + 1) * chunk, len(self.names)))) != digest]
