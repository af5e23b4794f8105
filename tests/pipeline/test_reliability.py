"""The reliability catalogue (docs/reliability.md), through the real CLI.

Every bad input makes ``pamtri`` exit non-zero with one line naming the file, line, key or image, no
traceback; ``pamtri data check`` gives the same message for the label and image entries; faults (a kill,
a non-finite loss, a full disk, a second writer) leave what was written intact. Tiny data and models
throughout: 32 px ReID images (DenseNet121, one or two batches), hrnet_w18_small at 64 x 64.
"""
from __future__ import annotations

import csv
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pamtri.common.checkpoint import load_checkpoint, save_checkpoint
from pamtri.pipeline.cli import main
from tests.conftest import replace_line, write_tiny_reid_config, write_tiny_synth_tree
from tests.pose.posedata import make_pose_set

REPO = Path(__file__).resolve().parents[2]


POSE_YAML = """\
data:
  train: [{{root: '{root}', split: train}}]
  val: [{{root: '{root}', split: test}}]
  batch_size: 4
  workers: 0
codec:
  input_size: [64, 64]
model: {{name: hrnet_w18_small}}
optim: {{epochs: {epochs}, milestones: [1]}}
eval: {{batch_size: 4}}
max_batches: {steps}
precision: fp32
device: cpu
threads: 1
"""


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    yield


# --- helpers -------------------------------------------------------------------------------------------------

def cli(argv, capsys) -> tuple[int, str, str]:
    """``pamtri ARGV`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error(code: int, err: str) -> str:
    """The single ``pamtri: error:`` line of a failed command (no traceback), without its prefix."""
    assert code != 0, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("pamtri: error: ")]
    assert len(lines) == 1, err
    return lines[0][len("pamtri: error: "):]


def check_errors(root: Path, capsys) -> list[str]:
    """The error lines of ``pamtri data check ROOT`` (every image decoded), without their prefix."""
    code, out, err = cli(["data", "check", root, "--max-decodes", "-1"], capsys)
    assert code == 1, out + err
    return [ln[len("error: "):] for ln in out.splitlines() if ln.startswith("error: ")]


def check_warnings(root: Path, capsys) -> list[str]:
    code, out, err = cli(["data", "check", root, "--max-decodes", "-1"], capsys)
    return [ln[len("warning: "):] for ln in out.splitlines() if ln.startswith("warning: ")]


@pytest.fixture(scope="module")
def reid_tree(tmp_path_factory) -> Path:
    """A `pamtri synth` tree: 3 train identities x 4 images of 32 px, query and test of the other 3."""
    return write_tiny_synth_tree(tmp_path_factory.mktemp("reid") / "data", ids=6)


@pytest.fixture
def reid_run(reid_tree, tmp_path):
    """(a writable copy of the tree, a config writer): ``config(epochs=1, batches=1, every=0) -> YAML path``."""
    root = tmp_path / "data"
    shutil.copytree(reid_tree, root)

    def config(epochs=1, batches=1, every=0, name="tiny.yaml"):
        path = tmp_path / name
        write_tiny_reid_config(path, root, epochs=epochs, batches=batches, every=every)
        return path
    return root, config


@pytest.fixture(scope="module")
def trained_reid(reid_tree, tmp_path_factory):
    """A finished one-epoch ReID run (best.pt, last.pt) on the module's tree."""
    base = tmp_path_factory.mktemp("trained")
    cfg = base / "tiny.yaml"
    write_tiny_reid_config(cfg, reid_tree, epochs=1, batches=1, every=1)
    assert main(["reid", "train", "--config", str(cfg), "--out", str(base / "run")]) == 0
    return base / "run", cfg


@pytest.fixture
def pose_tree(tmp_path) -> Path:
    root = tmp_path / "pose"
    make_pose_set(root, "train", n=4, seed=0)
    make_pose_set(root, "test", n=2, seed=1)
    return root


def pose_config(path: Path, root: Path, epochs=1, steps=1) -> Path:
    path.write_text(POSE_YAML.format(root=root, epochs=epochs, steps=steps))
    return path


@pytest.fixture(scope="module")
def pose_weights(tmp_path_factory) -> Path:
    """An untrained hrnet_w18_small pose checkpoint with its config (64 x 64 input)."""
    from pamtri.common.config import to_dict
    from pamtri.pose.config import PoseConfig
    from pamtri.pose.weights import build_pose_model
    torch.manual_seed(0)
    cfg = PoseConfig()
    cfg.model.name, cfg.codec.input_size = "hrnet_w18_small", (64, 64)
    path = tmp_path_factory.mktemp("pw") / "pose.pt"
    save_checkpoint({"model": build_pose_model("hrnet_w18_small").state_dict(), "config": to_dict(cfg)}, path)
    return path


def meta_rows(root: Path, split: str = "train") -> list[str]:
    return (root / f"meta_{split}.csv").read_text().splitlines()


def drop_images(root: Path, split: str, drop) -> None:
    """Remove the images whose name ``drop(name)`` accepts from every label file of a synth split."""
    for name, header in ((f"meta_{split}.csv", 1), (f"pose_label_{split}.csv", 0), (f"label_{split}.csv", 0),
                         (f"name_{split}.txt", 0)):
        lines = (root / name).read_text().splitlines()
        kept = lines[:header] + [ln for ln in lines[header:] if not drop(ln.split(",")[0])]
        (root / name).write_text("\n".join(kept) + "\n")


def train_images(root: Path) -> list[Path]:
    return sorted((root / "image_train").iterdir())


def jpeg_bytes(seed=0, size=32) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))
    return buf.tobytes()


# --- images --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case, words", [
    ("missing", ("meta_train.csv, line 2", "not found")),
    ("empty", ("meta_train.csv, line 2", "empty (0 bytes)")),
    ("directory", ("meta_train.csv, line 2", "is not a file")),
])
def test_image_missing_empty_or_a_folder(reid_run, capsys, case, words):
    """Found before training starts, named by the label file and line that lists the image."""
    root, config = reid_run
    image = root / "image_train" / meta_rows(root)[1].split(",")[0]
    image.unlink()
    if case == "empty":
        image.write_bytes(b"")
    elif case == "directory":
        image.mkdir()
    code, out, err = cli(["reid", "train", "--config", config(), "--out", root.parent / "run"], capsys)
    message = one_error(code, err)
    assert all(w in message for w in words), message
    assert not (root.parent / "run" / "last.pt").exists()
    assert message in check_errors(root, capsys)


@pytest.mark.parametrize("case, words", [
    ("truncated", "truncated JPEG"),
    ("corrupt", "cannot decode image"),
    ("tiny", "image is 1x1 pixels, smaller than the minimum 4x4"),
])
def test_image_truncated_corrupt_or_tiny(reid_run, capsys, case, words):
    """Found when the image is decoded (in a DataLoader worker): the one line names the image file."""
    root, config = reid_run
    for i, image in enumerate(train_images(root)):
        if case == "truncated":
            data = jpeg_bytes(i)
            image.write_bytes(data[:len(data) // 2])
        elif case == "corrupt":
            image.write_bytes(b"\x00 not an image " * 20)
        else:
            ok, buf = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))
            image.write_bytes(buf.tobytes())
    run = root.parent / "run"
    code, out, err = cli(["reid", "train", "--config", config(), "--out", run, "--set", "data.workers=1"], capsys)
    message = one_error(code, err)
    assert words in message and message.startswith(str(root / "image_train")), message
    assert not (run / "last.pt").exists() and not (run / ".lock").exists()
    assert message in check_errors(root, capsys)


def test_image_odd_formats_and_a_huge_image_train(reid_run, capsys):
    """Grayscale, RGBA and 16-bit images are converted, a 10000 x 10000 image is resized: training runs."""
    root, config = reid_run
    for i, image in enumerate(train_images(root)):
        kind = i % 4
        if kind == 0:
            ok, buf = cv2.imencode(".jpg", np.full((32, 32), 90, np.uint8))                    # grayscale JPEG
        elif kind == 1:
            ok, buf = cv2.imencode(".png", np.full((32, 32, 4), 120, np.uint8))                # RGBA PNG
        elif kind == 2:
            ok, buf = cv2.imencode(".png", np.full((32, 32, 3), 40000, np.uint16))             # 16-bit PNG
        else:
            ok, buf = cv2.imencode(".jpg", np.zeros((10000, 10000, 3), np.uint8))              # 10000 x 10000
        image.write_bytes(buf.tobytes())
    run = root.parent / "run"
    code, out, err = cli(["reid", "train", "--config", config(), "--out", run], capsys)
    assert code == 0, err
    assert load_checkpoint(run / "last.pt")["epoch"] == 1


def test_pose_training_reads_odd_formats_and_a_huge_image(pose_tree, tmp_path, capsys):
    """The pose stage: grayscale / RGBA / 16-bit converted; a 10000 x 10000 image decoded shrunk."""
    images = sorted((pose_tree / "image_train").iterdir())
    cv2.imwrite(str(images[0]), np.full((64, 80), 90, np.uint8))
    cv2.imwrite(str(images[1]), np.full((72, 64, 4), 120, np.uint8))
    cv2.imwrite(str(images[2]), np.full((64, 80, 3), 40000, np.uint16))
    huge = images[3].with_suffix(".jpg")
    cv2.imwrite(str(huge), np.zeros((10000, 10000, 3), np.uint8))
    os.replace(huge, images[3])  # a JPEG under the .png name the labels give
    cfg = pose_config(tmp_path / "pose.yaml", pose_tree)
    code, out, err = cli(["pose", "train", "--config", cfg, "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1


def test_pose_training_names_a_corrupt_image(pose_tree, tmp_path, capsys):
    for image in sorted((pose_tree / "image_train").iterdir()):
        image.write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    cfg = pose_config(tmp_path / "pose.yaml", pose_tree)
    code, out, err = cli(["pose", "train", "--config", cfg, "--out", tmp_path / "run", "--set", "data.workers=1"],
                         capsys)
    message = one_error(code, err)
    assert message.startswith(str(pose_tree / "image_train")) and "cannot decode image" in message, message
    assert not (tmp_path / "run" / "last.pt").exists()
    assert message in check_errors(pose_tree, capsys)


# --- labels: the same message from training and from `pamtri data check` --------------------------------------

def _pose_row(path: Path, line: int) -> list[str]:
    return path.read_text().splitlines()[line - 1].split(",")


@pytest.mark.parametrize("case, words", [
    ("columns", ("pose_label_train.csv, line 2", "expected 111 columns", "got 108: 35 keypoints instead of 36")),
    ("not a number", ("pose_label_train.csv, line 2", "column 5", "'x' is not a number")),
    ("nan", ("pose_label_train.csv, line 2", "keypoint 0 is not finite")),
    ("inf", ("pose_label_train.csv, line 2", "keypoint 1 is not finite")),
    ("escape", ("pose_label_train.csv, line 2", "points outside the data set root")),
    ("absolute", ("pose_label_train.csv, line 2", "absolute path")),
    ("duplicate", ("pose_label_train.csv, line 3", "duplicate image name", "first on line 1")),
    ("missing image", ("pose_label_train.csv, line 2", "not found")),
])
def test_pose_label_rows(pose_tree, tmp_path, capsys, case, words):
    """Malformed reference pose label rows stop `pamtri pose train` with the file and line."""
    labels = pose_tree / "pose_label_train.csv"
    row = _pose_row(labels, 2)
    if case == "columns":
        row = row[:-3]
    elif case == "not a number":
        row[4] = "x"
    elif case == "nan":
        row[3] = "nan"
    elif case == "inf":
        row[7] = "inf"
    elif case == "escape":
        row[0] = "../" + row[0]
    elif case == "absolute":
        row[0] = "/etc/passwd"
    elif case == "duplicate":
        row = _pose_row(labels, 1)
        replace_line(labels, 3, ",".join(row))
    elif case == "missing image":
        (pose_tree / "image_train" / row[0]).unlink()
    if case != "duplicate":
        replace_line(labels, 2, ",".join(row))
    cfg = pose_config(tmp_path / "pose.yaml", pose_tree)
    code, out, err = cli(["pose", "train", "--config", cfg, "--out", tmp_path / "run"], capsys)
    message = one_error(code, err)
    assert message.startswith(str(labels)) and all(w in message for w in words), message
    assert not (tmp_path / "run" / "last.pt").exists()
    assert message in check_errors(pose_tree, capsys)


@pytest.mark.parametrize("case, line, text, words", [
    ("columns", 3, "{name},1,1,5,7,93.18", ("line 3", "expected 7 columns (as the header), got 6")),
    ("not a number", 3, "{name},1,two,5,7,93.18,real", ("line 3", "camera_id 'two' is not an integer")),
    ("duplicate", 3, "{first}", ("line 3", "duplicate image name", "first on line 2")),
    ("escape", 3, "../{name},1,1,5,7,93.18,real", ("line 3", "points outside the data set root")),
    ("colour class", 3, "{name},1,1,12,7,93.18,real", ("line 3", "color_id 12 out of range")),
    ("type class", 3, "{name},1,1,5,11,93.18,real", ("line 3", "type_id 11 out of range")),
])
def test_reid_label_rows(reid_run, capsys, case, line, text, words):
    """Malformed label rows stop `pamtri reid train` before anything is written, naming file and line."""
    root, config = reid_run
    rows = meta_rows(root)
    name = rows[line - 1].split(",")[0]
    replace_line(root / "meta_train.csv", line, text.format(name=name, first=rows[1]))
    code, out, err = cli(["reid", "train", "--config", config(), "--out", root.parent / "run"], capsys)
    message = one_error(code, err)
    assert message.startswith(str(root / "meta_train.csv")) and all(w in message for w in words), message
    assert not (root.parent / "run").exists() or not any((root.parent / "run").iterdir())
    assert message in check_errors(root, capsys)


@pytest.mark.parametrize("change, words", [
    ({"colorID": "11"}, "train_label.xml, line 6, <Item imageName='0005_c003_00010000_1.jpg'>: colorID id '11' out "
                        "of range 1-10"),
    ({"vehicleID": "five"}, "train_label.xml, line 6, <Item imageName='0005_c003_00010000_1.jpg'>: vehicleID 'five' "
                            "is not an integer"),
    ({"imageName": "../0005_c003_00010000_1.jpg"}, "points outside the data set root"),
    ({"imageName": None}, "train_label.xml, line 6, <Item>: missing attribute imageName"),
    ({"broken": True}, "train_label.xml, line 7: XML does not parse: not well-formed"),  # the quote runs on
])
def test_reid_label_xml(tmp_path, capsys, change, words):
    """VeRi-style label XML (gb2312): a bad <Item> names the file, its line and the element."""
    from tests.conftest import VERI_TRAIN, make_veri_tree, write_xml
    root = make_veri_tree(tmp_path / "veri")
    keys = ("imageName", "vehicleID", "cameraID", "colorID", "typeID")
    items = [dict(zip(keys, t)) for t in VERI_TRAIN]
    for k, v in change.items():
        if k == "broken":
            continue
        if v is None:
            del items[2][k]
        else:
            items[2][k] = v
    xml = write_xml(root / "train_label.xml", "TrainingImages", items)
    if "broken" in change:
        lines = xml.read_bytes().decode("gb2312").split("\r\n")
        lines[5] = lines[5].replace('" />', " />")
        xml.write_bytes("\r\n".join(lines).encode("gb2312"))
    if "imageName" in change and change["imageName"]:
        replace_line(root / "name_train.txt", 3, change["imageName"])
    cfg = tmp_path / "veri.yaml"
    cfg.write_text(f"data: {{train: [{{root: '{root}'}}], pose_source: none, workers: 0}}\n"
                   "model: {heatmaps: false, keypoints: false, pretrained: null}\n")
    code, out, err = cli(["reid", "train", "--config", cfg, "--out", tmp_path / "run"], capsys)
    message = one_error(code, err)
    assert message.startswith(str(root)) and words in message, message
    assert message in check_errors(root, capsys)


def test_reid_label_keypoints_not_finite(reid_run, capsys):
    """NaN keypoints in the ReID label CSV (the keypoints the K/H/S inputs are made from)."""
    root, config = reid_run
    labels = root / "label_train.csv"
    row = labels.read_text().splitlines()[0].split(",")
    row[4] = "nan"
    replace_line(labels, 1, ",".join(row))
    code, out, err = cli(["reid", "train", "--config", config(), "--out", root.parent / "run"], capsys)
    message = one_error(code, err)
    assert message.startswith(f"{labels}, line 1") and "keypoint 0 is not finite" in message, message
    assert message in check_errors(root, capsys)


def test_unknown_split(reid_run, capsys):
    root, config = reid_run
    code, out, err = cli(["reid", "train", "--config", config(), "--out", root.parent / "run",
                          "--set", f"data.train=[{{root: '{root}', split: validation}}]"], capsys)
    message = one_error(code, err)
    assert message == f"{root}: unknown split 'validation'; valid splits: train, query, test (gallery = test)"


def test_classes_outside_the_configured_ones(reid_run, capsys):
    """Colour ids above model.num_colors: the key, an image that has one, and what to do."""
    root, config = reid_run
    code, out, err = cli(["reid", "train", "--config", config(), "--out", root.parent / "run",
                          "--set", "model.num_colors=2"], capsys)
    message = one_error(code, err)
    assert message.startswith("model.num_colors = 2 but the training labels go up to ") and \
        str(root / "image_train") in message and "raise model.num_colors" in message, message


def test_identity_with_a_single_image(reid_run, capsys):
    """Under the P x K sampler with the triplet loss on, an identity with one image is refused."""
    root, config = reid_run
    first = meta_rows(root)[1].split(",")[0]
    drop_images(root, "train", lambda name: name.startswith("0001_") and name != first)
    code, out, err = cli(["reid", "train", "--config", config(), "--out", root.parent / "run"], capsys)
    message = one_error(code, err)
    assert message == f"{root}: 1 train identities have a single image (a triplet needs two): 1; remove them " \
                      "from the split, or set loss.triplet: 0"
    assert message in check_warnings(root, capsys)  # a warning there: it depends on the loss
    code, out, err = cli(["reid", "train", "--config", config(), "--out", root.parent / "run2",
                          "--set", "loss.triplet=0"], capsys)
    assert code == 0, err


def test_query_identity_absent_from_the_gallery(trained_reid, reid_run, capsys):
    run, _ = trained_reid
    root, _ = reid_run
    vid = meta_rows(root, "test")[1].split(",")[1]
    drop_images(root, "test", lambda name: name.startswith(f"{int(vid):04d}_"))
    code, out, err = cli(["reid", "eval", "--weights", run / "best.pt", "--data", root, "--out", root.parent / "ev"],
                         capsys)
    message = one_error(code, err)
    assert re.fullmatch(rf"{re.escape(str(root / 'image_query'))}/\S+\.jpg: query identity {int(vid)} has no image "
                        r"in the gallery \(test\); remove the query image or add the identity's gallery images",
                        message), message
    assert message in check_errors(root, capsys)
    assert not (root.parent / "ev").exists()


def test_data_set_without_camera_ids(trained_reid, reid_run, capsys):
    """Evaluation needs camera ids for the same-camera rule, or --ignore-cameras."""
    run, _ = trained_reid
    root, _ = reid_run
    for split in ("query", "test"):
        rows = meta_rows(root, split)
        fixed = [rows[0]] + [",".join(f[:2] + ["-1"] + f[3:]) for f in (r.split(",") for r in rows[1:])]
        (root / f"meta_{split}.csv").write_text("\n".join(fixed) + "\n")
    argv = ["reid", "eval", "--weights", run / "best.pt", "--data", root, "--out", root.parent / "ev"]
    code, out, err = cli(argv, capsys)
    message = one_error(code, err)
    assert message == f"{root}: split 'query' has no camera ids; evaluation cannot apply the same-camera rule: set " \
                      "eval.ignore_cameras: true (reid eval --ignore-cameras) to keep every same-identity gallery " \
                      "image, or add camera ids (folder format: name the images " \
                      "<vehicle id>_c<camera>_<anything>.jpg; csv format: a camera_id column)"
    assert message in check_warnings(root, capsys)
    code, out, err = cli(argv + ["--ignore-cameras"], capsys)
    assert code == 0, err
    assert "mAP" in out


# --- configs ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, expected", [
    (["optim.lrr=1"], "{cfg} (with --set overrides): unknown key 'optim.lrr' (valid keys here: bias_lr_factor, "
                      "delay_epochs, epoch_offset, epochs, gamma, lr, milestones, min_lr, momentum, name, nesterov, "
                      "schedule, warmup_epochs, warmup_factor, warmup_prefix, weight_decay, weight_decay_bias)"),
    (["optim.lr=fast"], "{cfg} (with --set overrides): key 'optim.lr': expected a number, got 'fast'"),
    (["sampler.k=four"], "{cfg} (with --set overrides): key 'sampler.k': expected an integer, got 'four'"),
    (["data.pose_source=none"], "model.heatmaps/model.segments need pose channels but data.pose_source is 'none'"),
    (["sampler.k=16"], "sampler.k = 16 images per identity exceeds sampler.batch_size = 8"),
    (["data.train=[{root: /no/such/folder}]"], "/no/such/folder: no such data set folder"),
    (["model.pretrained=/no/such/densenet.pth"], "/no/such/densenet.pth: checkpoint file does not exist"),
])
def test_reid_config_errors(reid_run, capsys, overrides, expected):
    root, config = reid_run
    cfg = config()
    argv = ["reid", "train", "--config", cfg, "--out", root.parent / "run"]
    code, out, err = cli(argv + [a for o in overrides for a in ("--set", o)], capsys)
    assert one_error(code, err) == expected.format(cfg=cfg)


def test_pose_config_errors_in_the_yaml_file(pose_tree, tmp_path, capsys):
    cfg = pose_config(tmp_path / "pose.yaml", pose_tree)
    text = cfg.read_text()
    cfg.write_text(text + "extra: 1\n")
    code, out, err = cli(["pose", "train", "--config", cfg, "--out", tmp_path / "run"], capsys)
    assert one_error(code, err) == (f"{cfg}: unknown key 'extra' (valid keys here: codec, data, device, eval, "
                                    "max_batches, model, optim, precision, seed, threads)")
    cfg.write_text(text.replace("batch_size: 4\n  workers", "batch_size: four\n  workers"))
    code, out, err = cli(["pose", "train", "--config", cfg, "--out", tmp_path / "run"], capsys)
    assert one_error(code, err) == f"{cfg}: key 'data.batch_size': expected an integer, got 'four'"
    cfg.write_text(text.replace("input_size: [64, 64]", "input_size: [64, 64"))
    code, out, err = cli(["pose", "train", "--config", cfg, "--out", tmp_path / "run"], capsys)
    message = one_error(code, err)
    assert re.match(rf"{re.escape(str(cfg))}, line \d+, column \d+: not valid YAML \(", message), message
    for missing, words in (("data.train=[{root: /no/such/root}]", "/no/such/root/pose_label_train.csv: pose labels"),
                           ("model.weights=/no/such/w.pt", "/no/such/w.pt: checkpoint file does not exist")):
        code, out, err = cli(["pose", "train", "--config", pose_config(cfg, pose_tree), "--out", tmp_path / "run",
                              "--set", missing], capsys)
        assert one_error(code, err).startswith(words), err
    code, out, err = cli(["pose", "train", "--config", tmp_path / "none.yaml", "--out", tmp_path / "run"], capsys)
    assert one_error(code, err) == f"{tmp_path / 'none.yaml'}: config file does not exist"
    assert not (tmp_path / "run" / "last.pt").exists()


def test_yaml_is_loaded_safely(reid_run, capsys):
    """A YAML tag that would construct a Python object (and run a command) is refused, not executed."""
    root, config = reid_run
    sentinel = root.parent / "pwned"
    cfg = config()
    cfg.write_text(cfg.read_text() + f"name: !!python/object/apply:os.system ['touch {sentinel}']\n")
    code, out, err = cli(["reid", "train", "--config", cfg, "--out", root.parent / "run"], capsys)
    message = one_error(code, err)
    assert message.startswith(f"{cfg}, line ") and "not valid YAML" in message, message
    assert not sentinel.exists()


# --- weights ---------------------------------------------------------------------------------------------------

def test_checkpoint_of_another_architecture_lists_the_mismatched_keys(pose_weights, pose_tree, tmp_path, capsys):
    code, out, err = cli(["pose", "predict", "--weights", pose_weights, "--model", "hrnet_w32", "--images",
                          pose_tree / "image_test", "--out", tmp_path / "pred", "--workers", "0"], capsys)
    message = one_error(code, err)
    assert message.startswith(f"{pose_weights}: checkpoint does not fit this model (PoseHRNet); shape mismatch: ")
    assert re.search(r"checkpoint \(\d+(, \d+)*\) vs model \(\d+(, \d+)*\)", message) and "more)" in message, message
    assert not (tmp_path / "pred" / "keypoints.csv").exists()


def test_checkpoint_with_another_channel_count_lists_the_mismatched_keys(trained_reid, tmp_path, capsys):
    """Resuming a run with model.heatmaps switched off: the first convolution has 3 input channels, not 39."""
    run, cfg = trained_reid
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    code, out, err = cli(["reid", "train", "--config", cfg, "--out", copy, "--resume", "--set", "optim.epochs=2",
                          "--set", "model.heatmaps=false"], capsys)
    message = one_error(code, err)
    assert message.startswith(f"{copy / 'last.pt'}: checkpoint does not fit this model (ReIDNet); shape mismatch: "), \
        message
    assert re.search(r"conv0\.weight: checkpoint \(64, 39, 7, 7\) vs model \(64, 3, 7, 7\)", message), message
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()} == before


def test_truncated_checkpoint(trained_reid, reid_tree, tmp_path, capsys):
    run, _ = trained_reid
    data = (run / "best.pt").read_bytes()
    bad = tmp_path / "best.pt"
    bad.write_bytes(data[:len(data) // 2])
    code, out, err = cli(["reid", "eval", "--weights", bad, "--data", reid_tree, "--out", tmp_path / "ev"], capsys)
    message = one_error(code, err)
    assert message.startswith(f"{bad}: cannot read checkpoint (truncated or corrupt file?)"), message
    bad.write_bytes(b"")
    code, out, err = cli(["reid", "eval", "--weights", bad, "--data", reid_tree, "--out", tmp_path / "ev"], capsys)
    assert one_error(code, err) == f"{bad}: checkpoint file is empty"


class _RunsCode:
    """Unpickling this would run ``touch <path>``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_pickle_that_would_run_code_is_refused(reid_tree, pose_tree, tmp_path, capsys):
    sentinel = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "config": {}, "hook": _RunsCode(sentinel)}, evil)
    commands = [
        ["reid", "eval", "--weights", evil, "--data", reid_tree, "--out", tmp_path / "ev"],
        ["pose", "predict", "--weights", evil, "--images", pose_tree / "image_test", "--out", tmp_path / "pr"],
        ["pose", "eval", "--weights", evil, "--data", pose_tree],
        ["cache", "build", "--pose-weights", evil, "--images", pose_tree / "image_test", "--out", tmp_path / "c"],
    ]
    for argv in commands:
        code, out, err = cli(argv, capsys)
        message = one_error(code, err)
        assert message.startswith(f"{evil}: refused to load: the file holds Python objects other than tensors"), \
            message
    assert not sentinel.exists()


def test_reid_eval_given_pose_weights(pose_weights, reid_tree, tmp_path, capsys):
    code, out, err = cli(["reid", "eval", "--weights", pose_weights, "--data", reid_tree, "--out", tmp_path], capsys)
    assert one_error(code, err).startswith(f"{pose_weights}: neither a pamtri ReID checkpoint")


def test_cache_of_other_pose_weights_is_refused(pose_weights, pose_tree, tmp_path, capsys):
    images, cache = pose_tree / "image_test", tmp_path / "cache"
    common = ["--images", images, "--out", cache, "--batch-size", "2", "--precision", "fp32", "--device", "cpu"]
    code, out, err = cli(["cache", "build", "--pose-weights", pose_weights] + common, capsys)
    assert code == 0, err
    state = load_checkpoint(pose_weights)
    state["model"] = {k: v * 1.01 if v.is_floating_point() else v for k, v in state["model"].items()}
    other = tmp_path / "other.pt"
    save_checkpoint(state, other)
    before = {p.name: p.read_bytes() for p in cache.iterdir() if p.is_file()}
    code, out, err = cli(["cache", "build", "--pose-weights", other] + common, capsys)
    assert one_error(code, err) == (
        f"{cache}: holds a cache (or a partial build) for other inputs (different pose weights, settings or image "
        f"list); rebuild it with `pamtri cache build ... --out {cache} --rebuild` (or delete the folder)")
    assert {p.name: p.read_bytes() for p in cache.iterdir() if p.is_file()} == before
    from pamtri.common.checkpoint import file_sha256
    from pamtri.pose.cache import Cache
    with pytest.raises(Exception, match="built with other pose weights.*--rebuild"):
        Cache(cache, expect_weights_sha256=file_sha256(other))
    code, out, err = cli(["cache", "build", "--pose-weights", other, "--rebuild"] + common, capsys)
    assert code == 0, err
    assert Cache(cache, expect_weights_sha256=file_sha256(other)).manifest["count"] == 2

    state["model"] = {k: v * np.nan if v.is_floating_point() else v for k, v in state["model"].items()}
    broken = tmp_path / "broken.pt"
    save_checkpoint(state, broken)
    code, out, err = cli(["cache", "build", "--pose-weights", broken, "--images", images, "--out", tmp_path / "c2"]
                         + common[4:], capsys)
    message = one_error(code, err)
    assert re.fullmatch(rf"{re.escape(str(tmp_path / 'c2'))}: the pose output for image '\S+' is not finite \(NaN or "
                        r"infinity\); nothing of it was stored: check the pose weights", message), message


# --- faults ----------------------------------------------------------------------------------------------------

def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _metrics(path: Path, skip=("time_s",)) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k not in skip} for row in csv.DictReader(fh)]


def _kill_after_first_checkpoint(argv: list, run: Path, seed: int) -> None:
    """Run ``pamtri ARGV`` in a subprocess and SIGKILL it at a random moment after last.pt first appears."""
    proc = subprocess.Popen([sys.executable, "-m", "pamtri"] + [str(a) for a in argv], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (run / "last.pt").exists():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.time() < deadline
            time.sleep(0.01)
        time.sleep(np.random.default_rng(seed).uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (run / ".lock").exists()  # left behind by the killed process: stale, taken over on resume
    assert load_checkpoint(run / "last.pt")["epoch"] < 3  # the kill did interrupt the run


def test_reid_killed_run_resumes_to_the_same_losses(reid_run, capsys):
    root, config = reid_run
    cfg = config(epochs=3, batches=1, every=1)
    straight, killed = root.parent / "straight", root.parent / "killed"
    assert main(["reid", "train", "--config", str(cfg), "--out", str(straight)]) == 0
    _kill_after_first_checkpoint(["reid", "train", "--config", cfg, "--out", killed], killed, seed=1)
    code, out, err = cli(["reid", "train", "--config", cfg, "--out", killed, "--resume"], capsys)
    assert code == 0, err
    a, b = _metrics(straight / "metrics.csv"), _metrics(killed / "metrics.csv")
    assert [r["epoch"] for r in b] == ["1", "2", "3"]
    assert a == b  # losses (every term), learning rate, mAP: epoch for epoch
    assert load_checkpoint(killed / "last.pt")["epoch"] == 3 and not (killed / ".lock").exists()


def test_pose_killed_run_resumes_to_the_same_losses(pose_tree, tmp_path, capsys):
    cfg = pose_config(tmp_path / "pose.yaml", pose_tree, epochs=3, steps=1)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(["pose", "train", "--config", str(cfg), "--out", str(straight)]) == 0
    _kill_after_first_checkpoint(["pose", "train", "--config", cfg, "--out", killed], killed, seed=2)
    code, out, err = cli(["pose", "train", "--out", killed, "--resume"], capsys)
    assert code == 0, err
    a, b = _metrics(straight / "metrics.csv"), _metrics(killed / "metrics.csv")
    assert [r["epoch"] for r in b] == ["1", "2", "3"]
    assert a == b  # loss, learning rate, PCK: epoch for epoch
    assert load_checkpoint(killed / "last.pt")["epoch"] == 3


def test_reid_non_finite_loss_keeps_the_last_good_checkpoint(reid_run, capsys):
    root, config = reid_run
    run = root.parent / "run"
    code, out, err = cli(["reid", "train", "--config", config(epochs=3), "--out", run, "--set", "optim.lr=1e30"],
                         capsys)
    message = one_error(code, err)
    assert re.fullmatch(r"loss term '\w+' is (nan|inf|-inf) at epoch 2, step 0; training stopped, the last good "
                        r"checkpoint is kept \(lower the learning rate, check the labels, or disable mixed precision\)",
                        message), message
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert len(_metrics(run / "metrics.csv")) == 1 and not (run / ".lock").exists()


def test_pose_non_finite_loss_keeps_the_last_good_checkpoint(pose_tree, tmp_path, capsys):
    cfg = pose_config(tmp_path / "pose.yaml", pose_tree, epochs=3)
    run = tmp_path / "run"
    code, out, err = cli(["pose", "train", "--config", cfg, "--out", run, "--set", "optim.lr=1e30"], capsys)
    message = one_error(code, err)
    assert re.match(r"loss term 'heatmap_mse' is (nan|inf) at epoch 2, step 0; training stopped", message), message
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and not (run / ".lock").exists()


def _hold_lock(folder: Path) -> subprocess.Popen:
    """A second process that takes the run lock of ``folder`` and keeps it until killed."""
    code = ("import sys, time; from pamtri.common.atomic import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], env=_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_of_a_run_folder_is_refused(trained_reid, pose_tree, pose_weights, tmp_path, capsys):
    run, cfg = trained_reid
    reid_copy, pose_run, cache = tmp_path / "reid", tmp_path / "pose", tmp_path / "cache"
    shutil.copytree(run, reid_copy)
    commands = {
        reid_copy: ["reid", "train", "--config", cfg, "--out", reid_copy, "--resume", "--set", "optim.epochs=2"],
        pose_run: ["pose", "train", "--config", pose_config(tmp_path / "pose.yaml", pose_tree), "--out", pose_run],
        cache: ["cache", "build", "--pose-weights", pose_weights, "--images", pose_tree / "image_test", "--out", cache],
    }
    for folder, argv in commands.items():
        holder = _hold_lock(folder)
        try:
            before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
            code, out, err = cli(argv, capsys)
            assert one_error(code, err) == (
                f"{folder}: another pamtri process (pid {holder.pid}) is writing this run folder; wait for it or "
                f"choose another --out (remove {folder / '.lock'} if that process is gone)")
            assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
        finally:
            holder.kill()
            holder.wait()


def test_training_refuses_to_overwrite_a_finished_run(trained_reid, pose_tree, tmp_path, capsys):
    run, cfg = trained_reid
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    code, out, err = cli(["reid", "train", "--config", cfg, "--out", run], capsys)
    assert one_error(code, err) == f"{run} already holds a training run (last.pt); pass --resume to continue it " \
                                   "or choose another --out"
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    pose_cfg = pose_config(tmp_path / "pose.yaml", pose_tree)
    assert cli(["pose", "train", "--config", pose_cfg, "--out", tmp_path / "p"], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "p").iterdir() if p.is_file()}
    code, out, err = cli(["pose", "train", "--config", pose_cfg, "--out", tmp_path / "p"], capsys)
    assert "already holds a training run (last.pt); pass --resume" in one_error(code, err)
    assert {p.name: p.read_bytes() for p in (tmp_path / "p").iterdir() if p.is_file()} == before


class _FullDisk:
    """A file whose next write stores half of the data, then fails with ENOSPC."""

    def __init__(self, fh):
        self.fh = fh

    def write(self, data):
        self.fh.write(data[:len(data) // 2])
        self.fh.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()
        return False


def _disk_full_when_writing(monkeypatch, name: str) -> list:
    """From now on, writing a file called ``name`` (through its temporary name) runs out of disk space."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to see which file a descriptor belongs to")
    real, hits = os.fdopen, []

    def fdopen(fd, *args, **kwargs):
        target = os.readlink(f"/proc/self/fd/{fd}")
        fh = real(fd, *args, **kwargs)
        if os.path.basename(target).startswith(f".{name}.") and target.endswith(".tmp"):
            hits.append(target)
            return _FullDisk(fh)
        return fh
    monkeypatch.setattr(os, "fdopen", fdopen)
    return hits


def test_disk_full_while_writing_a_checkpoint(trained_reid, tmp_path, capsys, monkeypatch):
    run, cfg = trained_reid
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = (copy / "last.pt").read_bytes()
    hits = _disk_full_when_writing(monkeypatch, "last.pt")
    argv = ["reid", "train", "--config", cfg, "--out", copy, "--resume", "--set", "optim.epochs=2"]
    code, out, err = cli(argv, capsys)
    assert hits
    assert one_error(code, err) == f"{copy / 'last.pt'}: cannot write (No space left on device); the previous " \
                                   "last.pt is unchanged; free some disk space and run the command again"
    assert (copy / "last.pt").read_bytes() == before and load_checkpoint(copy / "last.pt")["epoch"] == 1
    assert not [p for p in copy.iterdir() if p.name.endswith(".tmp")] and not (copy / ".lock").exists()
    monkeypatch.undo()
    code, out, err = cli(argv, capsys)  # space freed: the same command finishes the run
    assert code == 0, err
    assert load_checkpoint(copy / "last.pt")["epoch"] == 2
    assert [r["epoch"] for r in _metrics(copy / "metrics.csv")] == ["1", "2"]


def test_disk_full_while_writing_a_cache_chunk(pose_weights, pose_tree, tmp_path, capsys, monkeypatch):
    images = pose_tree / "image_train"  # 4 images: two chunks of 2
    common = ["--pose-weights", pose_weights, "--images", images, "--chunk-size", "2", "--batch-size", "2",
              "--precision", "fp32", "--device", "cpu"]
    assert cli(["cache", "build", "--out", tmp_path / "ref"] + common, capsys)[0] == 0
    cache = tmp_path / "cache"
    hits = _disk_full_when_writing(monkeypatch, "00001.json")  # the commit record of the second chunk
    code, out, err = cli(["cache", "build", "--out", cache] + common, capsys)
    assert hits
    record = cache / "chunks" / "00001.json"
    assert one_error(code, err) == f"{record}: cannot write (No space left on device); no 00001.json was " \
                                   "written; free some disk space and run the command again"
    assert (cache / "chunks" / "00000.json").is_file() and not record.exists()
    assert not (cache / "manifest.json").exists() and not (cache / ".lock").exists()
    assert not [p for p in (cache / "chunks").iterdir() if p.name.endswith(".tmp")]
    from pamtri.pose.cache import Cache
    code, out, err = cli(["cache", "verify", cache], capsys)  # an unfinished cache is not used
    assert "has not finished" in one_error(code, err)
    monkeypatch.undo()
    assert cli(["cache", "build", "--out", cache] + common, capsys)[0] == 0  # rebuilds only the second chunk
    a, b = Cache(tmp_path / "ref"), Cache(cache)
    assert a.manifest["chunks"] == b.manifest["chunks"]
    for key in a.arrays:
        np.testing.assert_array_equal(a.arrays[key], b.arrays[key])


# --- source guards: regressions of the security and atomic-write rules fail here -----------------------------

def _sources() -> list[Path]:
    return [p for d in ("pamtri", "pose", "reid", "pipeline") for p in sorted((REPO / d).rglob("*.py"))]


def _calls(path: Path):
    """(line, dotted callee name, ast.Call) of every call in a source file."""
    import ast
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            parts.append(f.id if isinstance(f, ast.Name) else "<expr>")  # e.g. model.to(d).eval() -> <expr>.eval
            yield node.lineno, ".".join(reversed(parts)), node


def _imports(path: Path) -> list[tuple[int, str]]:
    import ast
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.lineno, node.module))
    return out


def _keyword(call, name):
    import ast
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else kw.value
    return None


def test_no_unsafe_loading_or_code_from_config_values():
    """torch.load only with weights_only=True; no pickle loading, eval/exec, unsafe YAML or shell=True."""
    bad = []
    for path in _sources():
        rel = path.relative_to(REPO)
        for line, name, call in _calls(path):
            if name.endswith("torch.load"):
                if _keyword(call, "weights_only") is not True:
                    bad.append(f"{rel}:{line}: torch.load without weights_only=True")
            if name in ("eval", "exec", "compile", "__import__"):
                bad.append(f"{rel}:{line}: {name}()")
            if name.split(".")[-1] in ("load", "loads", "Unpickler") and name.split(".")[0] in ("pickle", "cPickle",
                                                                                                  "dill", "joblib"):
                bad.append(f"{rel}:{line}: {name}()")
            if name.startswith("yaml.") and name not in ("yaml.safe_load", "yaml.safe_dump", "yaml.safe_load_all"):
                bad.append(f"{rel}:{line}: {name}() (only yaml.safe_load / safe_dump)")
            if name.endswith("jit.load"):
                bad.append(f"{rel}:{line}: {name}() (TorchScript archives run code)")
            if _keyword(call, "allow_pickle") is True:
                bad.append(f"{rel}:{line}: allow_pickle=True")
            if _keyword(call, "shell") is True:
                bad.append(f"{rel}:{line}: shell=True")
        for line, module in _imports(path):
            top = module.split(".")[0]
            # pamtri/common/checkpoint.py imports pickle only to catch the UnpicklingError weights_only raises
            if top in ("pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal") and \
                    not (str(rel) == "pamtri/common/checkpoint.py" and module == "pickle"):
                bad.append(f"{rel}:{line}: import {module}")
    assert not bad, "\n".join(bad)
    assert "weights_only=True" in (REPO / "pamtri" / "common" / "checkpoint.py").read_text()


# Writes that are not through common.atomic, each with its reason.
_DIRECT_WRITES = {
    ("pose/cache.py", "np.lib.format.open_memmap"): "preallocated arrays; each chunk is committed by an atomic record "
                                                    "with its checksum, uncommitted rows are rebuilt",
    ("pose/predict_images.py", "np.lib.format.open_memmap"): "a hidden scratch file, deleted in a finally",
    ("pipeline/bench/cache.py", "cv2.imwrite"): "benchmark inputs in a temporary folder",
    ("pipeline/bench/baselines.py", "cv2.imwrite"): "the naive baseline's heatmap JPEGs in a temporary folder",
    ("pipeline/synth/dataset.py", "open"): "images written into a hidden staging folder that is renamed into place",
    ("pipeline/bench/harness.py", "open"): "/proc/self/clear_refs: a kernel control file (resets the memory "
                                           "high-water mark), not a file with contents",
}


def test_every_file_is_written_atomically():
    """Files are written through common.atomic (a temporary name, then a rename); the exceptions are listed."""
    import ast
    bad = []
    for path in _sources():
        rel = str(path.relative_to(REPO))
        if rel == "pamtri/common/atomic.py":
            continue
        for line, name, call in _calls(path):
            direct = None
            if name == "open":
                mode = call.args[1] if len(call.args) > 1 else _keyword(call, "mode")
                mode = mode.value if isinstance(mode, ast.Constant) else mode
                if isinstance(mode, str) and set(mode) & set("wax+"):
                    direct = "open for writing"
            elif name.split(".")[-1] in ("write_text", "write_bytes", "tofile", "to_csv", "imwrite", "open_memmap") \
                    or name.startswith("shutil.") and name.split(".")[-1] in ("copy", "copyfile", "copy2", "copytree",
                                                                              "move"):
                direct = name
            elif (name.split(".")[-1] in ("savefig", "save", "savez", "savez_compressed")
                  or name.endswith("onnx.export")):
                where = {"torch.save": 1, "torch.onnx.export": 2}.get(name, 0)
                target = call.args[where] if len(call.args) > where else _keyword(call, "f")
                if not (isinstance(target, ast.Name) and target.id in ("buf", "fh")):
                    direct = f"{name} to a path"
            if direct and (rel, name) not in _DIRECT_WRITES:
                bad.append(f"{rel}:{line}: {direct}")
    assert not bad, "write these through common.atomic (or list the exception with its reason):\n" + "\n".join(bad)


def test_debug_shows_the_traceback(pose_weights, pose_tree, tmp_path, capsys):
    from pamtri.common.errors import ConfigError
    argv = ["reid", "train", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "run")]
    assert one_error(*cli(argv, capsys)[::2]) == f"{tmp_path / 'none.yaml'}: config file does not exist"
    with pytest.raises(ConfigError, match="config file does not exist"):
        main(["--debug"] + argv)
    # an OSError from the environment (here: an output folder under a file) is one line too
    (tmp_path / "file").write_text("")
    code, out, err = cli(["pose", "predict", "--weights", pose_weights, "--images", pose_tree / "image_test",
                          "--out", tmp_path / "file" / "pred"], capsys)
    assert one_error(code, err) == f"{tmp_path / 'file' / 'pred'}: Not a directory (--debug shows the traceback)"
