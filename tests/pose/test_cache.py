import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pamtri.common.errors import CheckpointError, PamtriError
from pamtri.pose.cache import Cache, CacheSpec, CacheWriter, pack_segments, unpack_segments

REPO = Path(__file__).resolve().parents[2]

PRODUCER = textwrap.dedent('''
    import hashlib, sys, time
    import numpy as np

    def produce(names, delay=0.0):
        """Deterministic fake pose output per image name."""
        hms, kps = [], []
        for n in names:
            seed = int(hashlib.sha256(n.encode()).hexdigest()[:8], 16)
            rng = np.random.default_rng(seed)
            hms.append(rng.random((36, 8, 8), dtype=np.float32))
            kps.append(rng.random((36, 3), dtype=np.float32) * 100)
        time.sleep(delay)
        return np.stack(hms), np.stack(kps)
''')

BUILD = textwrap.dedent('''
    import sys
    sys.path.insert(0, sys.argv[3])
    from producer import produce
    from pamtri.pose.cache import CacheSpec, CacheWriter
    names = [f"{i:04d}_c001_{i:08d}_0.jpg" for i in range(int(sys.argv[2]))]
    spec = CacheSpec(weights_sha256="abc", pose_config={"w": 1}, input_size=(32, 32), heatmap_size=(8, 8), chunk_size=4)
    w = CacheWriter(sys.argv[1], names, spec)
    w.build(lambda n: produce(n, delay=float(sys.argv[4])), progress=False)
    w.finalise()
''')


def spec(**kw):
    base = dict(weights_sha256="abc", pose_config={"w": 1}, input_size=(32, 32), heatmap_size=(8, 8), chunk_size=4)
    base.update(kw)
    return CacheSpec(**base)


@pytest.fixture()
def scripts(tmp_path):
    d = tmp_path / "scripts"
    d.mkdir()
    (d / "producer.py").write_text(PRODUCER)
    (d / "build.py").write_text(BUILD)
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))


def names(n):
    return [f"{i:04d}_c001_{i:08d}_0.jpg" for i in range(n)]


def digest_folder(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def test_build_and_read_one_slice(tmp_path, scripts):
    from producer import produce
    w = CacheWriter(tmp_path / "c", names(10), spec())
    assert w.build(produce, progress=False) == 3
    w.finalise()
    cache = Cache(tmp_path / "c", expect_weights_sha256="abc")
    hm, kp = produce([names(10)[7]])
    got = cache.get(names(10)[7])
    np.testing.assert_allclose(got.heatmaps, hm[0], atol=0.5 / 255 + 1e-7)  # uint8 quantisation
    np.testing.assert_array_equal(got.keypoints, kp[0])
    assert got.segments is None
    assert cache.position(names(10)[3]) == 3
    with pytest.raises(PamtriError, match="not in this cache"):
        cache.position("nope.jpg")
    assert cache.verify() == []


def test_other_weights_and_unfinished_builds_are_refused(tmp_path, scripts):
    from producer import produce
    w = CacheWriter(tmp_path / "c", names(6), spec())
    w.build(produce, progress=False)
    with pytest.raises(CheckpointError, match="has not finished"):
        Cache(tmp_path / "c")
    w.finalise()
    with pytest.raises(CheckpointError, match="other pose weights.*pamtri cache build"):
        Cache(tmp_path / "c", expect_weights_sha256="def")
    with pytest.raises(CheckpointError, match="other inputs"):
        CacheWriter(tmp_path / "c", names(6), spec(weights_sha256="def"))
    manifest = json.loads((tmp_path / "c/manifest.json").read_text())
    manifest["schema"] = 99
    (tmp_path / "c/manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="schema 99"):
        Cache(tmp_path / "c")


def test_corrupt_chunk_is_detected_and_rebuilt(tmp_path, scripts):
    from producer import produce
    folder = tmp_path / "c"
    w = CacheWriter(folder, names(10), spec())
    w.build(produce, progress=False)
    w.finalise()
    before = digest_folder(folder)
    arr = np.load(folder / "keypoints.npy", mmap_mode="r+")
    arr[5, 0, 0] += 1.0  # silent corruption inside chunk 1
    arr.flush()
    del arr
    assert Cache(folder).verify() == [1]
    calls = []
    w2 = CacheWriter(folder, names(10), spec())
    assert w2.build(lambda n: calls.append(list(n)) or produce(n), progress=False) == 1
    assert calls == [names(10)[4:8]]
    w2.finalise()
    assert digest_folder(folder) == before


def test_segments_packed_round_trip():
    rng = np.random.default_rng(0)
    seg = (rng.random((2, 13, 12, 12)) > 0.5).astype(np.uint8)
    packed = pack_segments(seg)
    assert packed.shape == (2, 13, 18)
    np.testing.assert_array_equal(unpack_segments(packed, 12), seg)


def test_killed_build_resumes_to_identical_cache(tmp_path, scripts):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, str(scripts / "build.py"), str(ref), "40", str(scripts), "0"],
                   check=True, env=env)
    target = tmp_path / "killed"
    rng = random.Random(1234)
    unfinished = 0
    for _ in range(3):  # kill at random moments, several times
        proc = subprocess.Popen([sys.executable, str(scripts / "build.py"), str(target), "40", str(scripts), "0.15"],
                                env=env)
        time.sleep(rng.uniform(0.2, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        unfinished += not (target / "manifest.json").exists()
    assert unfinished >= 1  # the kills did interrupt the build
    subprocess.run([sys.executable, str(scripts / "build.py"), str(target), "40", str(scripts), "0"],
                   check=True, env=env)
    assert digest_folder(target) == digest_folder(ref)
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (ref, target))
    assert a["chunks"] == b["chunks"]


def test_sizes_are_width_height_and_the_grid_is_read_from_the_heatmaps(tmp_path):
    """A 10 x 6 (width x height) grid stores (N, 36, 6, 10) heatmaps; Cache.grid reads it from the array, so a
    manifest written when the spec documented (height, width) reads the same."""
    def produce(batch):
        return np.full((len(batch), 36, 6, 10), 0.5, np.float32), np.ones((len(batch), 36, 3), np.float32)

    w = CacheWriter(tmp_path / "c", names(3), spec(input_size=(64, 48), heatmap_size=(10, 6)))
    w.build(produce, progress=False)
    w.finalise()
    cache = Cache(tmp_path / "c")
    assert cache.arrays["heatmaps"].shape == (3, 36, 6, 10) and cache.grid == (10, 6)
    assert cache.manifest["spec"]["input_size"] == [64, 48] and cache.manifest["spec"]["heatmap_size"] == [10, 6]
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    manifest["spec"]["heatmap_size"] = [6, 10]  # an older manifest's order
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(manifest))
    assert Cache(tmp_path / "c").grid == (10, 6)
    with pytest.raises(PamtriError, match="positive"):
        spec(heatmap_size=(0, 0))


def test_a_garbage_build_plan_is_a_one_line_refusal_and_rebuild_recovers(tmp_path, scripts):
    """Issue 22: a garbage plan.json gave a JSONDecodeError traceback."""
    from producer import produce
    CacheWriter(tmp_path / "c", names(6), spec())
    (tmp_path / "c" / "plan.json").write_bytes(b"\x00garbage{")
    with pytest.raises(CheckpointError) as err:
        CacheWriter(tmp_path / "c", names(6), spec())
    assert str(err.value).startswith(f"{tmp_path / 'c' / 'plan.json'}: unreadable build plan (") and str(
        err.value).endswith(f"rebuild it with `pamtri cache build ... --out {tmp_path / 'c'} --rebuild` (or delete "
                            "the folder)") and "\n" not in str(err.value)
    w = CacheWriter(tmp_path / "c", names(6), spec(), rebuild=True)
    w.build(produce, progress=False)
    w.finalise()
    assert len(Cache(tmp_path / "c")) == 6
