"""Shared test fixtures: the real label files in ``<repo>/../shared/fixtures`` and small data set trees.

The tree builders write tiny JPEGs and label files in each supported on-disk format; tests then edit a
file to break it. Each builder returns the tree's root and documents the exact values it writes.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures"

TINY_REID_YAML = """\
data:
  train:
    - {{root: '{root}', split: train, domain: real}}
  eval_root: '{root}'
  height: 32
  width: 32
  workers: 0
  random_erasing: {erasing}
model: {{backbone: densenet121, pretrained: null, heatmaps: true, keypoints: true, color: true, type: true}}
sampler: {{batch_size: 8, k: 4}}
optim: {{epochs: {epochs}, milestones: [1]}}
max_batches: {batches}
eval: {{every: {every}, batch_size: 16}}
"""


def assert_heatmap_peaks_on_keypoints(x, kv, size: int = 64) -> None:
    """Each heatmap channel of the sample ``x`` (3 RGB + 36 heatmaps, size x size, normalised) peaks within 1.5
    cells of its keypoint in the vector ``kv`` (36 x (x, y, c), x and y in [-0.5, 0.5]), away from the border."""
    heat = x[3:39].numpy() * 0.226 + 0.449
    xy = (kv.numpy().reshape(36, 3)[:, :2] + 0.5) * size
    for k in range(36):
        r, c = np.unravel_index(np.argmax(heat[k]), heat[k].shape)
        if 1 <= xy[k, 0] <= size - 2 and 1 <= xy[k, 1] <= size - 2:
            assert abs(c - xy[k, 0]) <= 1.5 and abs(r - xy[k, 1]) <= 1.5, k


def write_tiny_synth_tree(root: Path, ids: int) -> Path:
    """A `pamtri synth` tree of 32 px images (seed 5, 4 images per identity, 2 cameras, realistic style):
    half the identities train, the other half make query and test."""
    from pamtri.pipeline.synth.dataset import generate
    generate(root, seed=5, ids=ids, images_per_id=4, size=32, style="realistic", cameras=2, progress=False)
    return root


def write_tiny_reid_config(path: Path, root: Path, epochs: int = 2, batches: int = 2, every: int = 1,
                           erasing: float = 0.0) -> Path:
    """A ReID experiment YAML small enough for a test: DenseNet121 at 32x32, MT+K+H, 8-image P x K batches
    (``batches`` per epoch, 0 = a full pass), data from the synth tree at ``root``."""
    path.write_text(TINY_REID_YAML.format(root=root, epochs=epochs, batches=batches, every=every, erasing=erasing))
    return path


def write_tiny_pose_checkpoint(path: Path) -> Path:
    """A pamtri pose checkpoint of a random hrnet_w18_small (seed 0) at a 64 x 64 input; returns ``path``."""
    import torch

    from pamtri.common.checkpoint import save_checkpoint
    from pamtri.common.config import to_dict
    from pamtri.pose.config import PoseConfig
    from pamtri.pose.weights import build_pose_model
    cfg = PoseConfig()
    cfg.model.name = "hrnet_w18_small"
    cfg.codec.input_size = (64, 64)
    torch.manual_seed(0)
    save_checkpoint({"model": build_pose_model("hrnet_w18_small").state_dict(), "config": to_dict(cfg)}, path)
    return path


def write_tiny_reid_checkpoint(path: Path, heatmaps: bool, segments: bool, keypoints: bool, height: int = 32,
                               width: int = 32, **model_kw):
    """A pamtri ReID checkpoint of a random DenseNet121 (5 ids) with the given inputs; returns its ReIDConfig."""
    import torch

    from pamtri.common.checkpoint import save_checkpoint
    from pamtri.common.config import to_dict
    from pamtri.reid.config import ModelConfig, ReIDConfig
    from pamtri.reid.weights import build_model
    cfg = ReIDConfig()
    cfg.data.height, cfg.data.width = height, width
    cfg.model = ModelConfig(heatmaps=heatmaps, segments=segments, keypoints=keypoints, **model_kw)
    torch.manual_seed(0)
    model = build_model(cfg.model, num_ids=5)
    save_checkpoint({"model": model.state_dict(), "model_description": model.describe(), "config": to_dict(cfg)},
                    path)
    return cfg


@pytest.fixture(autouse=True)
def no_runtime_record(tmp_path_factory, monkeypatch):
    """``--runtime auto`` sees no record of this machine's bench runs (torch, unless a test writes one)."""
    monkeypatch.setenv("PAMTRI_RUNTIME_RECORD", str(tmp_path_factory.getbasetemp() / "no-runtime-record.json"))


@pytest.fixture()
def one_torch_thread():
    """One torch thread for the test (small models on a busy 2-core machine run far faster that way)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``<repo>/../shared/fixtures`` (CI clones the repo with shared/ beside it)."""
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def veri_labels_dir(fixtures_dir) -> Path:
    """The reference implementation's real VeRi label files (pose_label_train.csv, ...)."""
    return fixtures_dir / "pamtri-veri"


def write_jpeg(path: Path, width: int = 24, height: int = 16, gray: bool = False, seed: int = 0) -> Path:
    """A small random JPEG (3 channels unless ``gray``)."""
    rng = np.random.default_rng(seed)
    shape = (height, width) if gray else (height, width, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rng.integers(0, 255, shape, dtype=np.uint8))
    return path


def write_xml(path: Path, root_tag: str, items: list[dict], comment: str = "车辆标注") -> Path:
    """A label XML declaring gb2312 and encoded in it (with a Chinese comment), one ``<Item>`` per line.

    ``<Item>`` number k (0-based) is on line k + 4.
    """
    lines = ['<?xml version="1.0" encoding="gb2312"?>', f"<{root_tag} Version=\"1.0\"><!-- {comment} -->",
             f'<Items number="{len(items)}">']
    for it in items:
        attrs = " ".join(f'{k}="{v}"' for k, v in it.items())
        lines.append(f"<Item {attrs} />")
    lines += ["</Items>", f"</{root_tag}>"]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("gb2312"))
    return path


def keypoint_row(seed: int, integer: bool) -> list[str]:
    """36 x (x, y, v) as CSV fields: integers with visibility 0/1, or 3-decimal floats with confidence."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(36):
        if integer:
            out += [str(int(rng.integers(0, 24))), str(int(rng.integers(0, 16))), str(int(k % 3 != 0))]
        else:
            out += [f"{rng.uniform(0, 24):.3f}", f"{rng.uniform(0, 16):.3f}", f"{rng.uniform(0, 1.05):.3f}"]
    return out


# VeRi: (name, vehicleID, cameraID, colorID, typeID) as written in the XML (1-based colour/type).
VERI_TRAIN = [
    ("0001_c001_00016450_0.jpg", "0001", "c001", "1", "4"),
    ("0001_c002_00016460_0.jpg", "0001", "c002", "1", "4"),
    ("0005_c003_00010000_1.jpg", "0005", "c003", "10", "9"),
    ("0005_c013_00010010_1.jpg", "0005", "c013", "10", "9"),
]
VERI_TEST = [
    ("0002_c002_00030600_0.jpg", "0002", "c002", "4", "2"),
    ("0002_c003_00084280_0.jpg", "0002", "c003", "4", "0"),  # the typeID="0" errata
    ("0007_c011_00000100_0.jpg", "0007", "c011", "7", "1"),
    ("0007_c012_00000200_0.jpg", "0007", "c012", "7", "1"),
]
VERI_QUERY = ["0002_c003_00084280_0.jpg", "0007_c011_00000100_0.jpg"]  # also in image_test/


def make_veri_tree(root: Path) -> Path:
    """A VeRi-776 tree: 4 train, 4 test (gallery), 2 query images; test_label.xml covers query and test."""
    for split, names in (("train", [t[0] for t in VERI_TRAIN]), ("test", [t[0] for t in VERI_TEST]),
                         ("query", VERI_QUERY)):
        for i, n in enumerate(names):
            write_jpeg(root / f"image_{split}" / n, seed=i)
        (root / f"name_{split}.txt").write_text("".join(n + "\n" for n in names))
    keys = ("imageName", "vehicleID", "cameraID", "colorID", "typeID")
    write_xml(root / "train_label.xml", "TrainingImages", [dict(zip(keys, t)) for t in VERI_TRAIN])
    write_xml(root / "test_label.xml", "TestImages", [dict(zip(keys, t)) for t in VERI_TEST])
    return root


# CityFlow: train items (name, vehicleID, cameraID); query/test are unlabelled name lists.
CITYFLOW_TRAIN = [("000001.jpg", "0001", "c001"), ("000002.jpg", "0001", "c012"),
                  ("000003.jpg", "0095", "c035"), ("000004.jpg", "0095", "c036")]
CITYFLOW_QUERY = ["000001.jpg", "000002.jpg"]
CITYFLOW_TEST = ["000001.jpg", "000002.jpg", "000003.jpg"]


def make_cityflow_tree(root: Path) -> Path:
    """A CityFlow-ReID tree: labelled train XML, unlabelled query/test name lists, test_track.txt."""
    for split, names in (("train", [t[0] for t in CITYFLOW_TRAIN]), ("query", CITYFLOW_QUERY),
                         ("test", CITYFLOW_TEST)):
        for i, n in enumerate(names):
            write_jpeg(root / f"image_{split}" / n, seed=i)
    write_xml(root / "train_label.xml", "TrainingImages",
              [dict(imageName=n, vehicleID=v, cameraID=c) for n, v, c in CITYFLOW_TRAIN])
    (root / "name_query.txt").write_text("\n".join(CITYFLOW_QUERY) + "\n")
    (root / "name_test.txt").write_text("\n".join(CITYFLOW_TEST) + "\n")
    (root / "test_track.txt").write_text("000001.jpg 000003.jpg \n\n000002.jpg\n")
    return root


# VehicleX: (name, vehicleID, cameraID, colorID, typeID, orientation); colour/type 0-based in the file.
VEHICLEX_TRAIN = [("000001.jpg", "0001", "c004", "0", "10", "25.5"),
                  ("000002.jpg", "0001", "c005", "0", "10", "300"),
                  ("000003.jpg", "0002", "c004", "11", "0", "0")]


def make_vehiclex_tree(root: Path) -> Path:
    """An AI City 2020 synthetic (VehicleX) tree: image_train/ and train_label.xml."""
    for i, t in enumerate(VEHICLEX_TRAIN):
        write_jpeg(root / "image_train" / t[0], seed=i)
    keys = ("imageName", "vehicleID", "cameraID", "colorID", "typeID", "orientation")
    write_xml(root / "train_label.xml", "TrainingImages", [dict(zip(keys, t)) for t in VEHICLEX_TRAIN])
    return root


# synth: meta rows per split (name, vehicle_id, camera_id, color_id, type_id, orientation_deg, domain), 0-based.
SYNTH_META = {
    "train": [("0001_c001_00000000_0.jpg", 1, 1, 0, 8, "12.5", "synthetic"),
              ("0001_c002_00000001_0.jpg", 1, 2, 0, 8, "200.0", "synthetic"),
              ("0002_c001_00000002_0.jpg", 2, 1, 9, 0, "359.0", "real"),
              ("0002_c002_00000003_0.jpg", 2, 2, 9, 0, "", "real")],
    "query": [("0003_c001_00000004_0.jpg", 3, 1, 4, 3, "90.0", "synthetic")],
    "test": [("0003_c001_00000004_0.jpg", 3, 1, 4, 3, "90.0", "synthetic"),
             ("0003_c002_00000005_0.jpg", 3, 2, 4, 3, "45.0", "synthetic")],
}
SYNTH_HEADER = "image,vehicle_id,camera_id,color_id,type_id,orientation_deg,domain"


def make_synth_tree(root: Path) -> Path:
    """A ``pamtri synth`` tree: images, name lists, meta / pose label / ReID label CSVs, synth.json.

    Image sizes are 24x16; pose rows use ``keypoint_row(seed=i, integer=True)`` and ReID rows
    ``keypoint_row(seed=100 + i, integer=False)`` where i is the row's index in its split.
    """
    for split, rows in SYNTH_META.items():
        meta, pose, reid, names = [SYNTH_HEADER], [], [], []
        for i, (n, vid, cam, col, typ, ori, dom) in enumerate(rows):
            write_jpeg(root / f"image_{split}" / n, seed=i)
            meta.append(f"{n},{vid},{cam},{col},{typ},{ori},{dom}")
            pose.append(",".join([n, "24", "16"] + keypoint_row(i, True)))
            reid.append(",".join([n, str(vid), str(col + 1), str(typ + 1)] + keypoint_row(100 + i, False)))
            names.append(n)
        (root / f"meta_{split}.csv").write_text("\n".join(meta) + "\n")
        (root / f"pose_label_{split}.csv").write_text("\n".join(pose) + "\n")
        (root / f"label_{split}.csv").write_text("\n".join(reid) + "\n")
        (root / f"name_{split}.txt").write_text("\n".join(names) + "\n")
    (root / "synth.json").write_text('{"generator": "test", "seed": 0}\n')
    return root


def replace_line(path: Path, lineno: int, text: str) -> None:
    """Replace 1-based line ``lineno`` of a UTF-8 text file."""
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def veri_tree(tmp_path) -> Path:
    return make_veri_tree(tmp_path / "veri")


@pytest.fixture
def cityflow_tree(tmp_path) -> Path:
    return make_cityflow_tree(tmp_path / "cityflow")


@pytest.fixture
def vehiclex_tree(tmp_path) -> Path:
    return make_vehiclex_tree(tmp_path / "vehiclex")


@pytest.fixture
def synth_tree(tmp_path) -> Path:
    return make_synth_tree(tmp_path / "synth")


# VehicleID: (image name, vehicle id) per list line; attribute files give colour / model per vehicle (0-based).
VEHICLEID_TRAIN = [("0000001", 1), ("0000002", 1), ("0000003", 2), ("0000004", 2)]
VEHICLEID_TEST_800 = [("0000005", 10), ("0000006", 10), ("0000007", 10), ("0000008", 11), ("0000009", 11),
                      ("0000010", 12), ("0000011", 12), ("0000012", 12)]
VEHICLEID_TEST_1600 = VEHICLEID_TEST_800 + [("0000013", 13), ("0000014", 13)]
VEHICLEID_COLORS = {1: 0, 2: 3, 10: 5, 11: 6}          # vehicle 12 and 13 have no colour line
VEHICLEID_MODELS = {1: 12, 2: 200, 10: 7, 11: 7, 12: 30}


def make_vehicleid_tree(root: Path) -> Path:
    """A VehicleID tree: image/, train_list.txt, test_list_800.txt and test_list_1600.txt, attribute files."""
    lists = {"train_list.txt": VEHICLEID_TRAIN, "test_list_800.txt": VEHICLEID_TEST_800,
             "test_list_1600.txt": VEHICLEID_TEST_1600}
    (root / "train_test_split").mkdir(parents=True)
    for i, (name, _) in enumerate(VEHICLEID_TRAIN + VEHICLEID_TEST_1600):
        write_jpeg(root / "image" / f"{name}.jpg", seed=i)
    for file, rows in lists.items():
        (root / "train_test_split" / file).write_text("".join(f"{n} {v}\n" for n, v in rows))
    (root / "attribute").mkdir()
    (root / "attribute" / "color_attr.txt").write_text("".join(f"{v} {c}\n" for v, c in VEHICLEID_COLORS.items()))
    (root / "attribute" / "model_attr.txt").write_text("".join(f"{v} {m}\n" for v, m in VEHICLEID_MODELS.items()))
    return root


# VERI-Wild: vehicle_info.txt rows (<vid>/<imgid>, camera, time, model, type, colour) and the split lists.
VERIWILD_INFO = [("00001/000001", 1, "Wuling Rongguang", "MPV", "white"),
                 ("00001/000002", 2, "Wuling Rongguang", "MPV", "white"),
                 ("00002/000003", 1, "Buick Excelle", "sedan", "black"),
                 ("00002/000004", 3, "Buick Excelle", "sedan", "black"),
                 ("00010/000010", 4, "Haval H6", "SUV", "red"),
                 ("00010/000011", 5, "Haval H6", "SUV", "red"),
                 ("00010/000012", 6, "Haval H6", "SUV", "red"),
                 ("00011/000013", 4, "Honda Fit", "sedan", "white"),
                 ("00011/000014", 5, "Honda Fit", "sedan", "white"),
                 ("00011/000015", 6, "Honda Fit", "sedan", "white"),
                 ("00012/000016", 4, "Ford Focus", "sedan", "black"),
                 ("00012/000017", 7, "Ford Focus", "sedan", "black")]
VERIWILD_LISTS = {"train_list.txt": ["00001/000001", "00001/000002", "00002/000003", "00002/000004"],
                  "test_3000.txt": ["00010/000010", "00010/000011", "00011/000013", "00011/000014"],
                  "test_3000_query.txt": ["00010/000012", "00011/000015"],
                  "test_5000.txt": ["00010/000010", "00010/000011", "00011/000013", "00011/000014",
                                    "00012/000016"],
                  "test_5000_query.txt": ["00010/000012", "00011/000015", "00012/000017"]}


def make_veriwild_tree(root: Path) -> Path:
    """A VERI-Wild tree: images/<vid>/<imgid>.jpg, the lists of test sets 3000 and 5000, vehicle_info.txt."""
    split = root / "train_test_split"
    split.mkdir(parents=True)
    for i, (key, *_) in enumerate(VERIWILD_INFO):
        write_jpeg(root / "images" / f"{key}.jpg", seed=i)
    for file, keys in VERIWILD_LISTS.items():
        (split / file).write_text("\n".join(keys) + "\n")
    lines = ["id/image;Camera ID;Time;Model;Type;Color"]
    lines += [f"{k};{cam};2018-03-11 10:08:{i:02d};{model};{vtype};{color}"
              for i, (k, cam, model, vtype, color) in enumerate(VERIWILD_INFO)]
    (split / "vehicle_info.txt").write_text("\n".join(lines) + "\n")
    return root


# folder format: relative image paths per split folder -> (vehicle id, camera id) the reader must give.
FOLDER_TREE = {"train": {"0001_c001_a.jpg": (1, 1), "0001_c002_b.jpg": (1, 2), "0002/0002_c003_y.jpg": (2, 3),
                         "0002/front.jpg": (2, -1)},
               "query": {"0003_c001_q.jpg": (3, 1)},
               "gallery": {"0003_c002_00084280_0.jpg": (3, 2), "0003_c1s1_000451_03.jpg": (3, 1)}}


def make_folder_tree(root: Path) -> Path:
    """A folder-format tree: train/ mixes named crops and a vehicle sub-folder; query/, gallery/ named crops."""
    for i, (split, images) in enumerate(FOLDER_TREE.items()):
        for j, name in enumerate(images):
            write_jpeg(root / split / name, seed=10 * i + j)
    (root / "train" / "notes.txt").write_text("not an image: ignored\n")
    return root


# csv format: the rows of each file under the header CSV_HEADER.
CSV_HEADER = "image,vehicle_id,camera_id,color,type,orientation,track"
CSV_ROWS = {"train.csv": ["crops/a.jpg,1,c001,4,2,90,7", "crops/b.jpg,1,2,4,,,", "crops/c.jpg,2,1,,0,359.5,8",
                          "crops/d.jpg,2,3,1,0,,8"],
            "query.csv": ["crops/q.jpg,3,1,0,1,,"],
            "gallery.csv": ["crops/g1.jpg,3,2,0,1,,", "crops/g2.jpg,3,4,0,1,,"]}


def make_csv_tree(root: Path) -> Path:
    """A csv-format tree: crops/ and train.csv, query.csv, gallery.csv with every column."""
    for file, rows in CSV_ROWS.items():
        for i, row in enumerate(rows):
            write_jpeg(root / row.split(",")[0], seed=i)
        (root / file).write_text("\n".join([CSV_HEADER] + rows) + "\n")
    return root


@pytest.fixture
def vehicleid_tree(tmp_path) -> Path:
    return make_vehicleid_tree(tmp_path / "vehicleid")


@pytest.fixture
def veriwild_tree(tmp_path) -> Path:
    return make_veriwild_tree(tmp_path / "veriwild")


@pytest.fixture
def folder_tree(tmp_path) -> Path:
    return make_folder_tree(tmp_path / "folder")


@pytest.fixture
def csv_tree(tmp_path) -> Path:
    return make_csv_tree(tmp_path / "csv")
