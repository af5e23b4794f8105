"""`pamtri reid train` / `reid eval` end to end on a generated tree converted to the folder and csv formats, and
`reid eval` under the VehicleID (10 draws) and VERI-Wild (test sets) protocols; tiny: 2 epochs x 2 batches at 32 px."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pamtri.data.readers import read_split
from pamtri.pipeline.cli import main
from tests.conftest import (
    make_vehicleid_tree,
    make_veriwild_tree,
    write_tiny_reid_checkpoint,
    write_tiny_reid_config,
    write_tiny_synth_tree,
)

RGB_ONLY = ["data.pose_source=none", "model.heatmaps=false", "model.keypoints=false"]  # no keypoints in these formats


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return write_tiny_synth_tree(tmp_path_factory.mktemp("formats") / "synth", ids=8)


def to_folder(src: Path, dst: Path) -> Path:
    """The synth tree as the folder format: train/<vehicle id>/ sub-folders, query/ and gallery/ named crops."""
    for split, folder in (("train", "train"), ("query", "query"), ("test", "gallery")):
        for r in read_split(src, split, "synth"):
            sub = dst / folder / (f"{r.vehicle_id:04d}" if split == "train" else "")
            sub.mkdir(parents=True, exist_ok=True)
            shutil.copy(r.path, sub / r.name)
    return dst


def to_csv(src: Path, dst: Path) -> Path:
    """The synth tree as the csv format without camera ids: image, vehicle_id, color, type, orientation."""
    for split, file in (("train", "train.csv"), ("query", "query.csv"), ("test", "gallery.csv")):
        rows = ["image,vehicle_id,color,type,orientation"]
        for r in read_split(src, split, "synth"):
            (dst / split).mkdir(parents=True, exist_ok=True)
            shutil.copy(r.path, dst / split / r.name)
            rows.append(f"{split}/{r.name},{r.vehicle_id},{r.color_id},{r.type_id},{r.orientation:g}"
                        .replace(",nan", ","))
        (dst / file).write_text("\n".join(rows) + "\n")
    return dst


def train(cfg: Path, run: Path, root: Path, fmt: str, *overrides: str) -> None:
    argv = ["reid", "train", "--config", str(cfg), "--out", str(run), "--set",
            f"data.train=[{{root: '{root}', format: {fmt}}}]", "--set", f"data.eval_format={fmt}"]
    for o in RGB_ONLY + list(overrides):
        argv += ["--set", o]
    assert main(argv) == 0


def test_folder_format_train_and_eval(synth, tmp_path, capsys):
    root = to_folder(synth, tmp_path / "folder")
    cfg = write_tiny_reid_config(tmp_path / "tiny.yaml", root)
    train(cfg, tmp_path / "run", root, "folder", "model.color=false", "model.type=false")
    metrics = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 3 and "mAP" in metrics[0]  # evaluated on query/ against gallery/ while training
    out = tmp_path / "eval"
    capsys.readouterr()
    assert main(["reid", "eval", "--weights", str(tmp_path / "run" / "best.pt"), "--data", str(root), "--format",
                 "folder", "--out", str(out)]) == 0
    assert "mAP" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_queries"] == len(read_split(synth, "query")) and 0 <= m["mAP"] <= 1
    assert m["ignore_cameras"] is False and (out / "ranklist.png").is_file()
    assert not (tmp_path / "run" / "attributes.json").exists()  # only VERI-Wild names its colours and types


def test_csv_format_without_cameras_train_and_eval(synth, tmp_path, capsys):
    root = to_csv(synth, tmp_path / "csv")
    cfg = write_tiny_reid_config(tmp_path / "tiny.yaml", root)
    train(cfg, tmp_path / "run", root, "csv", "eval.ignore_cameras=true")
    assert "mAP" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    argv = ["reid", "eval", "--weights", str(tmp_path / "run" / "best.pt"), "--data", str(root), "--format", "csv",
            "--out", str(tmp_path / "eval")]
    capsys.readouterr()
    assert main(argv + ["--set", "eval.ignore_cameras=false"]) == 1  # the run's config said true; here: no choice
    err = capsys.readouterr().err
    assert "split 'query' has no camera ids" in err and "--ignore-cameras" in err and "a camera_id column" in err
    assert main(argv + ["--ignore-cameras"]) == 0
    assert "colour acc" in capsys.readouterr().out
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["ignore_cameras"] is True and m["color_acc"] is not None


@pytest.fixture(scope="module")
def rgb_weights(tmp_path_factory) -> Path:
    """A random RGB-only DenseNet121 checkpoint (colour and type heads) at 32 px."""
    path = tmp_path_factory.mktemp("weights") / "rgb.pt"
    write_tiny_reid_checkpoint(path, heatmaps=False, segments=False, keypoints=False, num_colors=8, num_types=256)
    return path


def test_vehicleid_ten_draws(rgb_weights, tmp_path, capsys):
    root = make_vehicleid_tree(tmp_path / "vehicleid")
    argv = ["reid", "eval", "--weights", str(rgb_weights), "--data", str(root), "--format", "vehicleid",
            "--test-size", "1600", "--set", "data.draw_seed=7"]
    assert main(argv + ["--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "mean over 10 gallery draws (seed 7)" in out and "+-" in out
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert (m["protocol"], m["num_draws"], m["draw_seed"], m["test_size"]) == ("vehicleid", 10, 7, 1600)
    assert len(m["draws"]) == 10 and m["num_queries"] == 10 - 4  # 10 images of 4 vehicles, one each in the gallery
    for key in ("mAP", "rank1", "rank5"):
        values = [d[key] for d in m["draws"]]
        assert m[key] == pytest.approx(sum(values) / 10) and m[f"{key}_std"] >= 0
    assert main(argv + ["--out", str(tmp_path / "b")]) == 0  # the seed makes the draws reproducible
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["draws"] == m["draws"]
    assert main(["reid", "eval", "--weights", str(rgb_weights), "--data", str(root), "--test-size", "2400"]) == 1
    assert "no test set of size 2400 (present: 800, 1600)" in capsys.readouterr().err


def test_veriwild_test_sets_and_attribute_names(rgb_weights, tmp_path, capsys):
    root = make_veriwild_tree(tmp_path / "veriwild")
    for size, queries in ((3000, 2), (5000, 3)):
        out = tmp_path / f"eval{size}"
        assert main(["reid", "eval", "--weights", str(rgb_weights), "--data", str(root), "--format", "veriwild",
                     "--test-size", str(size), "--out", str(out)]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert (m["test_size"], m["num_queries"], m["ignore_cameras"]) == (size, queries, False)
        names = json.loads((out / "attributes.json").read_text())["sources"][0]
        assert (names["color"], names["type"]) == (["black", "red", "white"], ["MPV", "SUV", "sedan"])


def test_embed_and_cache_build_read_a_split_of_any_format(rgb_weights, tmp_path, capsys):
    import numpy as np

    from pamtri.pipeline.cachebuild import split_images
    root = make_veriwild_tree(tmp_path / "veriwild")
    assert split_images(root, "query", "veriwild", 5000) == \
           [str(root / "images" / f"{k}.jpg") for k in ("00010/000012", "00011/000015", "00012/000017")]
    out = tmp_path / "gallery.npz"
    assert main(["embed", "--reid-weights", str(rgb_weights), "--data", str(root), "--split", "gallery",
                 "--test-size", "5000", "--out", str(out)]) == 0
    saved = np.load(out)
    assert list(saved["names"]) == [f"images/{k}.jpg" for k in
                                    ("00010/000010", "00010/000011", "00011/000013", "00011/000014", "00012/000016")]
    assert saved["features"].shape[0] == 5


def test_veriwild_train_writes_the_names_of_its_ids(tmp_path):
    root = make_veriwild_tree(tmp_path / "veriwild")
    cfg = write_tiny_reid_config(tmp_path / "tiny.yaml", root, epochs=1, batches=1)
    train(cfg, tmp_path / "run", root, "veriwild", "data.test_size=5000")
    names = json.loads((tmp_path / "run" / "attributes.json").read_text())["sources"]
    assert names == [{"root": str(root), "format": "veriwild", "color": ["black", "red", "white"],
                      "type": ["MPV", "SUV", "sedan"]}]
    assert "mAP" in (tmp_path / "run" / "metrics.csv").read_text()  # evaluated on test set 5000 while training
