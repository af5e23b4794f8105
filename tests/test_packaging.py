"""`pip install .` puts exactly one top-level package, ``pamtri``, into site-packages, with every module of the
card's folders (pose/, reid/, pipeline/) and the shared layers (pamtri/) under it."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = {"pamtri": REPO / "pamtri", "pamtri/pose": REPO / "pose", "pamtri/reid": REPO / "reid",
           "pamtri/pipeline": REPO / "pipeline"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("src")
    keep = ("pamtri", "pose", "reid", "pipeline")
    for name in keep:
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, capture_output=True)
    return zipfile.ZipFile(next(out.glob("pamtri-*.whl")))


def test_one_top_level_package_with_every_module(wheel):
    names = wheel.namelist()
    assert {n.split("/")[0] for n in names} == {"pamtri", "pamtri-0.1.0.dist-info"}
    want = {f"{prefix}/{p.relative_to(folder).as_posix()}" for prefix, folder in SOURCES.items()
            for p in folder.rglob("*.py") if "__pycache__" not in p.parts}
    assert want <= set(names), sorted(want - set(names))
    entry = wheel.read("pamtri-0.1.0.dist-info/entry_points.txt").decode()
    assert "pamtri = pamtri.pipeline.cli:main" in entry


def test_python_dash_m_pamtri_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "pamtri", "--help"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("usage: pamtri") and "reid" in out.stdout
