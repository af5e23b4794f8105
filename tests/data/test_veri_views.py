"""VeRi view labels from VehicleReIDKeyPointData's keypoint_train.txt / keypoint_test.txt beside the data set."""
import numpy as np
import pytest

from pamtri.data.attributes import orientation_bin
from pamtri.data.readers.veri import read_veri_split, read_veri_views
from pamtri.data.records import Problems


def _line(name: str, view: int) -> str:
    coords = " ".join(["-1"] * 40)
    return f"VeRi/image_train/{name} {coords} {view}\n"


@pytest.mark.parametrize("folder", [".", "VehicleReIDKeyPointData"])
def test_view_labels_beside_veri_become_the_8_orientation_bins(veri_tree, folder):
    records = read_veri_split(veri_tree, "train")
    assert all(np.isnan(r.orientation) for r in records)  # no view file: no view
    (veri_tree / folder).mkdir(exist_ok=True)
    views = {r.name: i % 8 for i, r in enumerate(records)}
    (veri_tree / folder / "keypoint_train.txt").write_text("".join(_line(n, v) for n, v in views.items()))
    labelled = read_veri_split(veri_tree, "train")
    assert orientation_bin([r.orientation for r in labelled], 8).tolist() == [views[r.name] for r in labelled]
    assert all(np.isnan(r.orientation) for r in read_veri_split(veri_tree, "query"))  # keypoint_test.txt absent


def test_bad_view_lines_are_reported_with_their_line(tmp_path):
    path = tmp_path / "keypoint_test.txt"
    path.write_text(_line("0001_c001_1_0.jpg", 3) + _line("0002_c002_1_0.jpg", 9) + "short 1 2\n")
    problems = Problems()
    assert read_veri_views(path, problems) == {"0001_c001_1_0.jpg": 3}
    text = " ".join(str(e) for e in problems.errors)
    assert "class 0-7" in text and "42 fields" in text
