"""Issue 22: the gallery index under concurrent writers, readers beside a writer, faults and hostile input files.

Every test here failed on the code before the issue's fix (same temporary name for two writers, readers deleting
a live writer's files, short name arrays accepted, a build that could leave the metadata without its FAISS file,
tracebacks for corrupt files and a full disk)."""
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pamtri.common.errors import ConfigError, DataError
from pamtri.pipeline import index as gi
from pamtri.pipeline import search
from pamtri.pipeline.cli import main

from .test_index import clustered, write_features

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def one_error(code: int, err: str) -> str:
    assert code != 0, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("pamtri: error: ")]
    assert len(lines) == 1, err
    return lines[0][len("pamtri: error: "):]


def cli(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def small_index(tmp_path, n=50, kind="flat"):
    g = clustered(n)
    f = write_features(tmp_path / "a.npz", g, [f"g{i}" for i in range(n)])
    gi.build_index([f], tmp_path / "g.faiss", kind).close()
    return g


def assert_names_hold_their_vectors(path: Path, vectors: dict) -> None:
    idx = gi.open_index(path)
    try:
        names = gi._column(idx, "name")
        assert len(idx) == len(names) == len(vectors)
        x = np.stack([vectors[n] for n in names])
        pos, dist = gi.search_index(idx, x, top=1)
        assert (pos[:, 0] == np.arange(len(names))).all() and np.abs(dist[:, 0]).max() < 1e-2
    finally:
        idx.close()


_ADD_AT = """
import os, sys, time
from pamtri.pipeline.cli import main
import pamtri.pipeline.index as gi
gi.import_faiss()
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.005)
sys.exit(main(sys.argv[2:]))
"""


def test_two_concurrent_adds_are_serialised_and_keep_names_on_their_vectors(tmp_path):
    """Case 1: both adds start at the same instant; each name maps to its own vector, no traceback."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 32)).astype(np.float32)
    gi.build_index([write_features(tmp_path / "base.npz", base, [f"b{i}" for i in range(50)])],
                   tmp_path / "g.faiss", metric="euclidean").close()
    vectors = {f"b{i}": base[i] for i in range(50)}
    procs, go = [], tmp_path / "go"
    for tag in "xy":
        x = rng.normal(size=(20000, 32)).astype(np.float32)
        names = [f"{tag}_{i:07d}" for i in range(len(x))]
        vectors.update(zip(names, x))
        f = write_features(tmp_path / f"{tag}.npz", x, names)
        procs.append(subprocess.Popen([sys.executable, "-c", _ADD_AT, str(go), "index", "add",
                                       str(tmp_path / "g.faiss"), "--features", str(f)], env=_env(),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    time.sleep(4)  # both have imported everything and wait for the start
    go.write_text("go")
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    for out, err, rc in results:
        assert rc == 0 and "Traceback" not in err, err
        assert "20000 vectors added" in out
    assert_names_hold_their_vectors(tmp_path / "g.faiss", vectors)
    assert not list(tmp_path.glob(".g.faiss*"))  # no temporaries, lock released


def test_a_second_writer_waits_then_is_refused_with_one_line(tmp_path, capsys):
    small_index(tmp_path)
    extra = write_features(tmp_path / "b.npz", clustered(5, seed=2), [f"h{i}" for i in range(5)])
    code = ("import sys, time; from pamtri.pipeline import index as gi; from pathlib import Path; "
            "gi._lock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "g.faiss")], env=_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(tmp_path)
        rc, out, err = cli(["index", "add", tmp_path / "g.faiss", "--features", extra, "--wait", "0.3"], capsys)
        assert one_error(rc, err) == (
            f"{tmp_path / 'g.faiss'}: another pamtri process (pid {holder.pid}) is writing this index; it is "
            f"released when that process ends; run the command again then (remove {tmp_path / '.g.faiss.lock'} "
            "if that process is gone)")
        assert snapshot(tmp_path) == before
        # a search beside the writer still works
        assert len(search.search_to_csv(tmp_path / "g.faiss", tmp_path / "a.npz", top=3)) == 150
    finally:
        holder.kill()
        holder.wait()
    assert gi.add_to_index(tmp_path / "g.faiss", [extra], wait=0) == (5, 0)  # a dead holder's lock is free


def test_a_search_while_an_add_runs_neither_breaks_it_nor_sees_half_of_it(tmp_path, monkeypatch):
    """Case 2: readers open the index between the add's FAISS write and its commit, and between its commit and
    its rename; they see the old then the new generation whole, and the add succeeds."""
    g = small_index(tmp_path)
    extra = clustered(30, seed=5)
    f2 = write_features(tmp_path / "b.npz", extra, [f"h{i}" for i in range(30)])
    seen = []
    real_commit = gi._commit

    def read(path=tmp_path / "g.faiss"):
        idx = gi.open_index(path)
        try:
            seen.append((len(idx), int(gi.search_index(idx, g[:2], top=1)[0][0, 0])))
        finally:
            idx.close()

    def commit_with_readers(*args, **kwargs):
        read()
        real_commit(*args, **kwargs)
        read()
    monkeypatch.setattr(gi, "_commit", commit_with_readers)
    assert gi.add_to_index(tmp_path / "g.faiss", [f2]) == (30, 0)
    assert seen == [(50, 0), (80, 0)]
    monkeypatch.undo()
    assert_names_hold_their_vectors(tmp_path / "g.faiss", {**{f"g{i}": g[i] for i in range(50)},
                                                           **{f"h{i}": extra[i] for i in range(30)}})


def _bad_features(path: Path, case: str) -> Path:
    x = clustered(50)
    names = np.asarray([f"n{i}" for i in range(50)])
    arrays = dict(features=x, names=names, paths=np.asarray([f"/i/{n}" for n in names]),
                  reid_weights=np.asarray("reid.pt"), pose_weights=np.asarray(""),
                  reid_weights_sha256=np.asarray("a" * 64))
    if case == "short names":
        arrays["names"] = names[:10]
    elif case == "short cameras":
        arrays["cameras"] = np.arange(49)
    elif case == "nan":
        arrays["features"][7, 3] = np.nan
    elif case == "inf":
        arrays["features"][0, 0] = np.inf
    elif case == "1-d":
        arrays["features"] = x[:, 0]
    elif case == "empty":
        arrays.update(features=np.zeros((0, 16), np.float32), names=names[:0], paths=names[:0])
    np.savez(path, **arrays)
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:3000])
    return path


@pytest.mark.parametrize("case, message", [
    ("short names", "names has 10 entries (shape (10,)) for 50 feature rows; each image needs one"),
    ("short cameras", "cameras has 49 entries (shape (49,)) for 50 feature rows; each image needs one"),
    ("nan", "1 feature row(s) not finite (NaN or infinity; first: row 7, n7); re-embed those images"),
    ("inf", "1 feature row(s) not finite (NaN or infinity; first: row 0, n0); re-embed those images"),
    ("1-d", "features must be a 2-D numeric array (images x embedding), got shape (50,) of float32"),
    ("empty", "holds no features (shape (0, 16))"),
    ("truncated", "cannot read gallery file ("),
])
def test_bad_feature_files_are_refused_before_anything_is_written(tmp_path, capsys, case, message):
    """Case 3 and the one-line cases of input files: add and build refuse, naming the file; the index is
    unchanged and no build leaves a file."""
    small_index(tmp_path)
    bad = _bad_features(tmp_path / "bad.npz", case)
    before = snapshot(tmp_path)
    rc, out, err = cli(["index", "add", tmp_path / "g.faiss", "--features", bad], capsys)
    line = one_error(rc, err)
    assert line.startswith(f"{bad}: ") and message in line
    assert snapshot(tmp_path) == before
    rc, out, err = cli(["index", "build", "--features", bad, "--out", tmp_path / "new.faiss"], capsys)
    assert message in one_error(rc, err)
    assert not list(tmp_path.glob("*new.faiss*"))
    rc, out, err = cli(["index", "search", tmp_path / "g.faiss", "--features", bad], capsys)
    assert message in one_error(rc, err)  # NaN queries are refused, not silently dropped


def test_a_build_cut_anywhere_leaves_nothing_that_blocks_a_rerun(tmp_path, monkeypatch):
    """Case 5: killed before the metadata rename -> only temporaries, removed by the re-run; killed after it ->
    a whole index (the FAISS file read from its pending name, then renamed by the next writer)."""
    f = write_features(tmp_path / "a.npz", clustered(50), [f"g{i}" for i in range(50)])
    out = tmp_path / "g.faiss"
    real_replace = os.replace
    for cut_at in (0, 1):
        calls = []

        def cut(src, dst, calls=calls, cut_at=cut_at):
            calls.append(dst)
            if len(calls) == cut_at + 1:
                raise KeyboardInterrupt("killed")
            return real_replace(src, dst)
        monkeypatch.setattr(gi.os, "replace", cut)
        monkeypatch.setattr(gi.Path, "unlink", lambda self, *a, **k: None)
        monkeypatch.setattr(gi.os, "unlink", lambda *a, **k: None)  # a kill removes nothing
        with pytest.raises(KeyboardInterrupt):
            gi.build_index([f], out)
        monkeypatch.undo()
        if cut_at == 0:
            assert not out.exists() and not gi._meta_path(out).exists() and list(tmp_path.glob(".g.faiss.*tmp"))
            gi.build_index([f], out).close()  # the re-run is not blocked
        else:
            assert gi._meta_path(out).exists() and not out.exists()
            with pytest.raises(DataError, match="index already exists"):
                gi.build_index([f], out)
        idx = gi.open_index(out)
        assert len(idx) == 50 and out.exists() and not list(tmp_path.glob(".g.faiss.*tmp"))
        idx.close()
        for p in (out, gi._meta_path(out)):
            p.unlink()


def _limited(limit: int):
    def set_limit():  # files may not grow past `limit` bytes: writes beyond fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return set_limit


def _run_limited(argv, limit):
    return subprocess.run([sys.executable, "-m", "pamtri", *map(str, argv)], env=_env(), capture_output=True,
                          text=True, preexec_fn=_limited(limit), timeout=120)


def test_a_full_disk_during_build_and_add_is_one_line_and_leaves_no_temporary(tmp_path):
    big = write_features(tmp_path / "big.npz", np.random.default_rng(0).normal(size=(16000, 16)),
                         [f"x{i}" for i in range(16000)])
    r = _run_limited(["index", "build", "--features", big, "--out", tmp_path / "g.faiss"], 200_000)
    line = one_error(r.returncode, r.stderr)
    assert line.startswith(f"{tmp_path / 'g.faiss'}: cannot write (") and "no g.faiss was written" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npz"]
    (tmp_path / "i").mkdir()
    small_index(tmp_path / "i")
    idx_path = tmp_path / "i" / "g.faiss"
    before = snapshot(tmp_path / "i")
    r = _run_limited(["index", "add", idx_path, "--features", big], 200_000)  # the FAISS file does not fit
    assert "cannot write (" in one_error(r.returncode, r.stderr) and "the previous g.faiss is unchanged" in r.stderr
    assert snapshot(tmp_path / "i") == before
    long = write_features(tmp_path / "long.npz", clustered(300, seed=9), [f"{i:05d}" + "n" * 3000
                                                                            for i in range(300)])
    r = _run_limited(["index", "add", idx_path, "--features", long], 400_000)  # the metadata does not fit
    line = one_error(r.returncode, r.stderr)
    assert line.startswith(f"{idx_path}.sqlite: cannot write (") and "rollback" not in line, line
    assert not list((tmp_path / "i").glob(".*tmp*"))
    assert len(gi.open_index(idx_path)) == 50


def test_corrupt_index_files_are_one_line_errors(tmp_path, capsys):
    small_index(tmp_path)
    q = tmp_path / "a.npz"
    (tmp_path / "g.faiss").write_bytes(b"\x00garbage" * 50)
    rc, out, err = cli(["index", "search", tmp_path / "g.faiss", "--features", q], capsys)
    assert one_error(rc, err).startswith(f"{tmp_path / 'g.faiss'}: cannot read the FAISS file (")
    (tmp_path / "g.faiss.sqlite").write_bytes(os.urandom(4096))
    rc, out, err = cli(["index", "add", tmp_path / "g.faiss", "--features", q], capsys)
    assert one_error(rc, err).startswith(f"{tmp_path / 'g.faiss.sqlite'}: cannot read the index metadata (")


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_ivf_builds_refuse_too_few_vectors_and_train_small_sets_without_faiss_warnings(tmp_path, capfd, kind):
    f = write_features(tmp_path / "a.npz", clustered(20), [f"g{i}" for i in range(20)])
    with pytest.raises(ConfigError, match=f"--kind {kind} needs at least"):
        gi.build_index([f], tmp_path / "s.faiss", kind)
    assert not list(tmp_path.glob("*s.faiss*"))
    f = write_features(tmp_path / "b.npz", clustered(300, dim=64), [f"g{i}" for i in range(300)])
    capfd.readouterr()
    gi.build_index([f], tmp_path / "g.faiss", kind).close()
    assert "WARNING" not in capfd.readouterr().err


def test_searching_an_empty_index_is_a_one_line_error(tmp_path):
    small_index(tmp_path)
    idx = gi.open_index(tmp_path / "g.faiss")
    idx.faiss.reset()
    with pytest.raises(DataError, match="holds no vectors"):
        gi.search_index(idx, clustered(2), top=3)
    idx.close()


def test_names_with_control_characters_are_printed_escaped(tmp_path, capsys):
    g = clustered(5)
    f = write_features(tmp_path / "a.npz", g, ["a\nfake line", "b", "c", "d", "e"])
    gi.build_index([f], tmp_path / "g.faiss").close()
    rc, out, err = cli(["index", "search", tmp_path / "g.faiss", "--features", f, "--top", "1"], capsys)
    assert rc == 0 and out.splitlines()[0].startswith("'a\\nfake line'    1. 'a\\nfake line'") and len(
        out.splitlines()) == 5

