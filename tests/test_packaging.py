"""`pip install .` puts exactly one top-level package, ``pamtri``, into site-packages, with every module of the
card's folders (pose/, reid/, pipeline/) and the shared layers (pamtri/) under it; import path = file path
(pamtri/pose, pamtri/reid, pamtri/pipeline are symlinks to the top-level folders), so a wheel install, an
editable install and a second clone each import only their own files."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = {"pamtri": REPO / "pamtri", "pamtri/pose": REPO / "pose", "pamtri/reid": REPO / "reid",
           "pamtri/pipeline": REPO / "pipeline"}
STAGES = ("pose", "reid", "pipeline")
# one module of each layer; importing them must not pull in a file from outside the tree under test
PROBE = ("import json, sys, pamtri.common.errors, pamtri.pose.codec, pamtri.reid.losses, pamtri.pipeline.cli;"
         "print(json.dumps({m: getattr(sys.modules[m], '__file__', None) for m in sys.modules"
         " if m == 'pamtri' or m.startswith('pamtri.')}))")


def _source_tree(dest: Path) -> Path:
    """A copy of the package sources (symlinks kept as symlinks) with the build files, as a clone has them."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("pamtri",) + STAGES:
        shutil.copytree(REPO / name, dest / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, dest / name)
    return dest


def _imported_files(cwd: Path, env: dict | None = None) -> dict[str, str]:
    import json
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return {m: f for m, f in json.loads(out.stdout).items() if f}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = _source_tree(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, capture_output=True)
    return next(out.glob("pamtri-*.whl"))


def test_stage_folders_are_symlinked_under_the_package():
    for stage in STAGES:
        link = REPO / "pamtri" / stage
        assert link.is_symlink() and link.resolve() == (REPO / stage).resolve(), link


def test_one_top_level_package_with_every_module(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"pamtri", "pamtri-0.1.0.dist-info"}
    want = {f"{prefix}/{p.relative_to(folder).as_posix()}" for prefix, folder in SOURCES.items()
            for p in folder.rglob("*.py") if "__pycache__" not in p.parts}
    want |= {f"pamtri/pipeline/templates/{p.name}" for p in (REPO / "pipeline" / "templates").iterdir()}
    assert want <= set(names), sorted(want - set(names))
    entry = zipfile.ZipFile(wheel).read("pamtri-0.1.0.dist-info/entry_points.txt").decode()
    assert "pamtri = pamtri.pipeline.cli:main" in entry


def test_wheel_install_imports_only_its_own_files(wheel, tmp_path):
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)   # a wheel install is its unpacked tree on sys.path
    env = {**os.environ, "PYTHONPATH": str(target)}
    files = _imported_files(tmp_path, env)       # cwd outside any checkout
    assert len(files) > 4
    outside = {m: f for m, f in files.items() if not Path(f).resolve().is_relative_to(target.resolve())}
    assert not outside, outside


def test_second_clone_imports_only_its_own_files(tmp_path):
    clone = _source_tree(tmp_path / "clone")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    files = _imported_files(clone, env)          # run from the clone's root, as `python -m pamtri` would be
    assert len(files) > 4
    outside = {m: f for m, f in files.items() if not Path(f).resolve().is_relative_to(clone.resolve())}
    assert not outside, outside
    # the stage modules are read through the symlink, at the path their import names
    assert Path(files["pamtri.pose.codec"]) == clone / "pamtri" / "pose" / "codec.py"


def test_editable_install_resolves_the_stages_through_the_package_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    files = _imported_files(tmp_path, env)       # this checkout's own (editable) install, from elsewhere
    for module in ("pamtri.pose.codec", "pamtri.reid.losses", "pamtri.pipeline.cli"):
        stage, name = module.split(".")[1:]
        assert Path(files[module]).resolve() == (REPO / stage / f"{name}.py").resolve(), files[module]


def test_python_dash_m_pamtri_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "pamtri", "--help"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("usage: pamtri") and "reid" in out.stdout
