"""``pamtri data check``: clean trees pass, every problem is listed with its file and line, exit codes."""
from __future__ import annotations

import json

import cv2
import numpy as np

from pamtri.pipeline.cli import main
from pamtri.pipeline.datacheck import check_dataset, image_header
from tests.conftest import SYNTH_META, VERI_TEST, make_synth_tree, replace_line, write_jpeg, write_xml


def run_cli(argv, capsys):
    """Run ``pamtri data ...`` as the console script does; (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_lists_data_group():
    from pamtri.pipeline import cli
    assert "data" in cli.COMMAND_MODULES


def test_clean_synth_tree_exits_0(synth_tree, capsys):
    code, out, err = run_cli(["data", "check", str(synth_tree)], capsys)
    assert code == 0, out
    assert "format: synth" in out and "0 errors" in out and out.rstrip().endswith("OK")
    train = next(line for line in out.splitlines() if line.startswith("train "))
    assert train.split()[:4] == ["train", "4", "2", "2"]  # images, identities, cameras


def test_summary_values(synth_tree):
    report = check_dataset(synth_tree)
    assert report["ok"] and report["errors"] == 0 and report["format"] == "synth"
    s = report["splits"]["train"]
    assert (s["images"], s["identities"], s["cameras"]) == (4, 2, 2)
    assert (s["color"], s["type"], s["orientation"], s["keypoints"]) == (1.0, 1.0, 0.75, 1.0)
    assert s["domains"] == {"real": 2, "synthetic": 2}
    assert report["splits"]["query"]["images"] == 1 and report["splits"]["test"]["images"] == 2
    assert report["images"]["headers"] == 7 and report["images"]["decoded"] == 7


def test_broken_line_and_missing_image_exit_1(synth_tree, capsys):
    meta_train, meta_test = synth_tree / "meta_train.csv", synth_tree / "meta_test.csv"
    replace_line(meta_train, 3, "0001_c002_00000001_0.jpg,1,two,0,8,200.0,synthetic")
    (synth_tree / "image_test" / SYNTH_META["test"][1][0]).unlink()
    code, out, err = run_cli(["data", "check", str(synth_tree)], capsys)
    assert code == 1
    lines = out.splitlines()
    assert any(line.startswith(f"error: {meta_train}, line 3:") and "camera_id 'two'" in line for line in lines), out
    assert any(line.startswith(f"error: {meta_test}, line 3:") and "not found" in line for line in lines), out
    assert "2 errors" in out  # the skipped row's other files (pose, ReID, names) are not reported again
    assert out.rstrip().endswith("FAILED: problems found")


def test_several_problems_in_one_file_are_all_listed(synth_tree):
    meta = synth_tree / "meta_train.csv"
    replace_line(meta, 2, "0001_c001_00000000_0.jpg,1,1,0,8,999,synthetic")
    replace_line(meta, 4, "0002_c001_00000002_0.jpg,2,1,42,0,359.0,real")
    report = check_dataset(synth_tree)
    found = [(p["file"], p["line"]) for p in report["problems"] if p["severity"] == "error"]
    assert (str(meta), 2) in found and (str(meta), 4) in found


def test_json_output(synth_tree, capsys):
    (synth_tree / "image_train" / SYNTH_META["train"][0][0]).unlink()
    code, out, err = run_cli(["data", "check", str(synth_tree), "--json"], capsys)
    assert code == 1
    report = json.loads(out)
    assert report["format"] == "synth" and report["ok"] is False and report["errors"] >= 1
    p = next(p for p in report["problems"] if p["severity"] == "error")
    assert p["file"] == str(synth_tree / "meta_train.csv") and p["line"] == 2 and p["split"] == "train"
    assert report["splits"]["train"]["images"] == 3


def test_bad_arguments_exit_2_and_no_tree_is_one_error_line(tmp_path, synth_tree, capsys):
    code, out, err = run_cli(["data", "check", str(synth_tree), "--format", "market1501"], capsys)
    assert code == 2 and "invalid choice" in err
    # no tree to check: the common error path, one `pamtri: error:` line naming the folder, exit 1
    code, out, err = run_cli(["data", "check", str(tmp_path / "nowhere")], capsys)
    assert code == 1 and err == f"pamtri: error: {tmp_path / 'nowhere'}: no such folder\n" and out == ""
    (tmp_path / "empty").mkdir()
    code, out, err = run_cli(["data", "check", str(tmp_path / "empty")], capsys)
    assert code == 1 and err.startswith(f"pamtri: error: {tmp_path / 'empty'}: cannot tell the data set format")
    assert err.count("\n") == 1


def test_veri_tree_with_errata_is_clean_with_a_warning(veri_tree, capsys):
    code, out, err = run_cli(["data", "check", str(veri_tree), "--format", "veri"], capsys)
    assert code == 0, out
    assert 'warning:' in out and str(veri_tree / "test_label.xml") + ", line 5" in out
    assert out.count('typeID="0"') == 1  # query and test share test_label.xml: reported once


def test_cityflow_without_ground_truth_warns(cityflow_tree):
    report = check_dataset(cityflow_tree)
    assert report["ok"] and report["format"] == "cityflow"
    texts = [p["text"] for p in report["problems"]]
    assert any("split 'query' has no identity labels" in t for t in texts)
    assert report["splits"]["train"]["identities"] == 2 and report["splits"]["query"]["identities"] == 0


def test_cityflow_track_naming_an_unknown_image(cityflow_tree):
    (cityflow_tree / "test_track.txt").write_text("000001.jpg 000003.jpg\n000002.jpg 000009.jpg\n")
    report = check_dataset(cityflow_tree)
    errs = [(p["file"], p["line"], p["message"]) for p in report["problems"] if p["severity"] == "error"]
    assert errs == [(str(cityflow_tree / "test_track.txt"), 2, "image '000009.jpg' is not in the test split")]


def test_vehiclex_tree_is_clean(vehiclex_tree):
    report = check_dataset(vehiclex_tree)
    assert report["ok"] and list(report["splits"]) == ["train"]
    assert report["splits"]["train"]["domains"] == {"synthetic": 3}


def test_image_problems(synth_tree):
    train = SYNTH_META["train"]
    write_jpeg(synth_tree / "image_train" / train[0][0], gray=True)                   # warning
    (synth_tree / "image_train" / train[1][0]).write_bytes(b"not an image at all")    # error
    write_jpeg(synth_tree / "image_train" / train[2][0], width=30, height=16)         # labels say 24x16
    jpeg = (synth_tree / "image_train" / train[3][0]).read_bytes()
    (synth_tree / "image_train" / train[3][0]).write_bytes(jpeg[:len(jpeg) // 2])     # truncated
    write_jpeg(synth_tree / "image_train" / "stray.jpg")                              # unlisted: warning
    report = check_dataset(synth_tree)
    by_file = {}
    for p in report["problems"]:
        by_file.setdefault((p["file"], p["severity"]), []).append(p["message"])
    img = synth_tree / "image_train"
    assert any("grayscale" in m for m in by_file[(str(img / train[0][0]), "warning")])
    # the decoder's message, the one training gives for this file
    assert any("cannot decode image" in m for m in by_file[(str(img / train[1][0]), "error")])
    assert any("30x16 pixels but its labels say 24x16" in m for m in by_file[(str(img / train[2][0]), "error")])
    assert any("truncated" in m.lower() for m in by_file[(str(img / train[3][0]), "error")])
    assert any("stray.jpg" in m for m in by_file[(str(img), "warning")])
    assert not report["ok"]


def test_headers_only_mode_skips_decoding(synth_tree):
    report = check_dataset(synth_tree, max_decodes=0)
    assert report["images"]["decoded"] == 0 and report["images"]["headers"] == 7


def test_cross_split_checks(tmp_path):
    root = make_synth_tree(tmp_path / "s")
    # query identity 3 -> 9 (absent from the gallery); train identity 2 loses an image (single image left).
    replace_line(root / "meta_query.csv", 2, "0003_c001_00000004_0.jpg,9,1,4,3,90.0,synthetic")
    (root / "label_query.csv").unlink()
    meta = (root / "meta_train.csv").read_text().splitlines()
    (root / "meta_train.csv").write_text("\n".join(meta[:-1]) + "\n")
    for f in ("pose_label_train.csv", "label_train.csv", "name_train.txt"):
        lines = (root / f).read_text().splitlines()
        (root / f).write_text("\n".join(lines[:-1]) + "\n")
    (root / "image_train" / SYNTH_META["train"][3][0]).unlink()
    report = check_dataset(root)
    errors = [p["text"] for p in report["problems"] if p["severity"] == "error"]
    warnings = [p["text"] for p in report["problems"] if p["severity"] == "warning"]
    assert any("query identity 9 has no image in the gallery" in t for t in errors), errors
    assert any("1 train identities have a single image" in t and ": 2" in t for t in warnings), warnings


def test_name_in_train_and_test_is_an_error(synth_tree):
    dup = SYNTH_META["train"][0]
    with open(synth_tree / "meta_test.csv", "a") as fh:
        fh.write(",".join(map(str, dup)) + "\n")
    for f in ("pose_label_test.csv", "label_test.csv", "name_test.txt"):
        (synth_tree / f).unlink()
    write_jpeg(synth_tree / "image_test" / dup[0])
    report = check_dataset(synth_tree)
    assert any(f"image name '{dup[0]}' is in both train and test" in p["text"] for p in report["problems"]
               if p["severity"] == "error")
    assert any("identities appear in both train and test" in p["text"] for p in report["problems"])


def test_image_header_reads_sizes(tmp_path):
    assert image_header(write_jpeg(tmp_path / "a.jpg", 37, 21)) == (37, 21, 3)
    assert image_header(write_jpeg(tmp_path / "g.jpg", 20, 18, gray=True)) == (20, 18, 1)
    assert cv2.imwrite(str(tmp_path / "b.png"), np.zeros((9, 13, 4), np.uint8))
    assert image_header(tmp_path / "b.png") == (13, 9, 4)
    assert cv2.imwrite(str(tmp_path / "c.bmp"), np.zeros((7, 5, 3), np.uint8))
    assert image_header(tmp_path / "c.bmp") == (5, 7, 3)


def test_veri_check_reports_xml_problem_with_line(veri_tree):
    keys = ("imageName", "vehicleID", "cameraID", "colorID", "typeID")
    items = [dict(zip(keys, t)) for t in VERI_TEST]
    items[2]["colorID"] = "99"
    write_xml(veri_tree / "test_label.xml", "TestImages", items)
    report = check_dataset(veri_tree)
    errs = [p for p in report["problems"] if p["severity"] == "error"]
    assert any(p["file"] == str(veri_tree / "test_label.xml") and p["line"] == 6 for p in errs), errs
    assert not report["ok"]
