"""The reference implementation's heatmap / segment folders (read for migration, written for export)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pamtri.common.errors import DataError
from pamtri.pose.legacy import (
    legacy_folders,
    read_legacy_heatmaps,
    read_legacy_maps,
    read_legacy_segments,
    sibling_folder,
    write_legacy_maps,
)


def reference_tree(root, h=(16, 12), s=(30, 20)):
    """Write one image's 36 heatmaps (value 7 * k) and 13 segments (value 255 in band k) as the reference does."""
    heat_dir, seg_dir = legacy_folders(root, "train", "0001_c001_00016450_0.jpg")
    heat_dir.mkdir(parents=True)
    seg_dir.mkdir(parents=True)
    for k in range(36):
        assert cv2.imwrite(str(heat_dir / f"{k:02d}.jpg"), np.full(h[::-1], 7 * k, np.uint8))
    for k in range(13):
        img = np.zeros(s[::-1], np.uint8)
        img[:, 2 * k:2 * k + 2] = 255
        assert cv2.imwrite(str(seg_dir / f"{k:02d}.jpg"), img)
    return heat_dir, seg_dir


def test_folders_follow_the_reference_layout(tmp_path):
    heat, seg = legacy_folders(tmp_path, "query", "0002_c002_00030600_0.jpg")
    assert heat == tmp_path / "heatmap_query" / "0002_c002_00030600_0"
    assert seg == tmp_path / "segment_query" / "0002_c002_00030600_0"
    assert sibling_folder(heat) == seg and sibling_folder(seg) == heat
    with pytest.raises(DataError):
        legacy_folders(tmp_path, "query", "../x.jpg")


def test_read_from_either_root(tmp_path):
    heat_dir, seg_dir = reference_tree(tmp_path)
    for folder in (heat_dir, seg_dir):
        heat, seg = read_legacy_maps(folder)
        assert heat.shape == (36, 12, 16) and heat.dtype == np.uint8
        assert seg.shape == (13, 20, 30) and seg.dtype == np.uint8
        # channel k really is file k (flat images survive JPEG exactly up to +-1)
        assert np.abs(heat.mean(axis=(1, 2)) - 7 * np.arange(36)).max() <= 1
        assert [int(np.argmax(seg[k].mean(axis=0))) // 2 for k in range(13)] == list(range(13))


def test_missing_odd_and_mismatched_files_name_the_file(tmp_path):
    heat_dir, seg_dir = reference_tree(tmp_path)
    (heat_dir / "17.jpg").unlink()
    with pytest.raises(DataError) as exc_info:
        read_legacy_heatmaps(heat_dir)
    assert exc_info.value.path == str(heat_dir / "17.jpg") and "heatmap 17 is missing" in str(exc_info.value)
    cv2.imwrite(str(heat_dir / "17.jpg"), np.zeros((5, 5), np.uint8))
    with pytest.raises(DataError) as exc_info:
        read_legacy_heatmaps(heat_dir)
    assert exc_info.value.path == str(heat_dir / "17.jpg")
    assert "is 5x5 pixels, but 00.jpg is 16x12" in str(exc_info.value)
    (seg_dir / "13.jpg").write_bytes((seg_dir / "12.jpg").read_bytes())
    with pytest.raises(DataError) as exc_info:
        read_legacy_segments(seg_dir)
    assert exc_info.value.path == str(seg_dir / "13.jpg") and "00.jpg-12.jpg" in str(exc_info.value)
    (seg_dir / "13.jpg").unlink()
    (seg_dir / "05.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError) as exc_info:
        read_legacy_segments(seg_dir)
    assert exc_info.value.path == str(seg_dir / "05.jpg") and "cannot decode" in str(exc_info.value)
    with pytest.raises(DataError, match="does not exist"):
        read_legacy_segments(tmp_path / "segment_train" / "nope")


def test_write_then_read(tmp_path):
    heat_dir, _ = legacy_folders(tmp_path, "test", "0005_c003_00010000_1.jpg")
    rng = np.random.default_rng(0)
    heat = np.zeros((36, 8, 8), np.float32)
    heat[np.arange(36), rng.integers(0, 8, 36), rng.integers(0, 8, 36)] = 1.0
    heat = cv2.GaussianBlur(heat.transpose(1, 2, 0), (5, 5), 1).transpose(2, 0, 1)
    heat /= heat.max(axis=(1, 2), keepdims=True)
    seg = np.zeros((13, 24, 32), bool)
    for k in range(13):
        seg[k, 4:20, 2 * k:2 * k + 6] = True
    write_legacy_maps(heat_dir, heat, seg, quality=100)
    assert sorted(p.name for p in heat_dir.iterdir()) == [f"{k:02d}.jpg" for k in range(36)]
    h, s = read_legacy_maps(heat_dir)
    assert np.abs(h.astype(float) - heat * 255).max() <= 8          # JPEG, lossy
    assert np.array_equal(h.reshape(36, -1).argmax(1), (heat.reshape(36, -1)).argmax(1))
    assert ((s > 127) == seg).mean() > 0.99
    with pytest.raises(DataError, match=r"shape \(36, h, w\)"):
        write_legacy_maps(heat_dir, heat[:35], None)
