import numpy as np
import pytest

from pamtri.pose.metrics import format_table, legacy_pck, normalised_errors, pck, pck_curve, pck_table


def _hand_worked():
    """Two images, boxes 30x40 (0.25 x diagonal = 12.5 px) and 60x80 (25 px); errors along x."""
    gt = np.zeros((2, 36, 3))
    gt[..., 2] = 1
    gt[0, :, :2] = (115, 70)
    gt[0, 0, :2], gt[0, 1, :2] = (100, 50), (130, 90)
    gt[1, :, :2] = (30, 40)
    gt[1, 0, :2], gt[1, 1, :2] = (0, 0), (60, 80)
    gt[0, 18, 2] = 0
    gt[1, [10, 11], 2] = 0
    err = np.zeros((2, 36))
    err[0, [0, 1, 18, 2, 3]] = (6.0, 7.0, 100.0, 6.25, 6.26)
    err[1, [0, 1, 18, 19, 28, 10, 11]] = (12.5, 13.0, 2.5, 2.6, 20.0, 99.0, 99.0)
    pred = gt[..., :2].copy()
    pred[..., 0] += err
    return pred, gt


def test_pck_hand_worked_pooled_per_group():
    pred, gt = _hand_worked()
    out = pck(pred, gt)
    assert set(out) == {"wheel", "fender", "back", "front", "back_windshield", "front_windshield", "mean"}
    assert out["wheel"] == pytest.approx(100 * 5 / 7)       # pooled, not the mean of keypoints (75 %)
    assert out["fender"] == pytest.approx(100 * 31 / 32)    # error == threshold counts as correct
    assert out["back"] == pytest.approx(100 * 5 / 6)        # invisible keypoints are not counted
    assert out["front"] == out["back_windshield"] == out["front_windshield"] == 100.0
    assert out["mean"] == pytest.approx(100 * 65 / 69)
    assert pck(pred, gt, 0.1)["mean"] == pytest.approx(100 * 61 / 69)
    row = pck_table(pred, gt)
    assert row["mean@0.1"] == pytest.approx(100 * 61 / 69) and row["mean"] == out["mean"]


def test_normalised_errors_use_each_images_keypoint_box():
    pred, gt = _hand_worked()
    e = normalised_errors(pred, gt)
    assert e[0, 0] == pytest.approx(6.0 / 12.5) and e[1, 0] == pytest.approx(12.5 / 25.0)


def test_pck_curve_monotone_and_endpoints():
    pred, gt = _hand_worked()
    t = np.array([0.0, 0.1, 0.5])
    curve = pck_curve(pred, gt, t)
    assert curve["mean"][2] == pytest.approx(100 * 65 / 69) and curve["mean"][1] == pytest.approx(100 * 61 / 69)
    exact = (np.abs(pred - gt[..., :2]).sum(-1) == 0) & (gt[..., 2] > 0)
    assert curve["mean"][0] == pytest.approx(100 * exact.sum() / 69)
    full = pck_curve(pred, gt)
    assert np.all(np.diff(full["mean"]) >= 0)


def test_group_without_visible_keypoints_is_nan():
    pred, gt = _hand_worked()
    gt[:, [16, 17, 34, 35], 2] = 0
    assert np.isnan(pck(pred, gt)["front"])


def test_legacy_pck_reproduces_the_reference_formula():
    n = 64  # constant threshold 0.5 x 0.25 x sqrt(64) = 1 px; its "Mean@0.1" uses 0.11 -> 0.22 px
    gt = np.zeros((n, 36, 3))
    gt[..., :2] = np.random.default_rng(0).uniform(0, 200, (n, 36, 2))
    gt[..., 2] = 1
    gt[:, 1, 2] = 0  # keypoint 1 never visible: left out of the unweighted means
    pred = gt[..., :2].copy()
    pred[0, 0, 0] += 0.9
    pred[1, 0, 0] += 1.1
    pred[0, 18, 1] += 0.2
    pred[1, 18, 1] += 0.3
    out = legacy_pck(pred, gt)
    assert out["threshold_px"] == pytest.approx(1.0)
    assert out["wheel"] == pytest.approx(100 * (63 / 64 + 1 + 1) / 3)
    assert out["mean"] == pytest.approx(100 * (34 + 63 / 64) / 35)
    assert out["mean@0.1"] == pytest.approx(100 * (33 + 62 / 64 + 63 / 64) / 35)


def test_format_table_has_the_table5_columns():
    pred, gt = _hand_worked()
    text = format_table(pck_table(pred, gt), "title")
    for col in ("Wheel", "Fender", "Back", "Front", "Back windshield", "Front windshield", "Mean", "Mean@0.1"):
        assert col in text
    assert "94.20" in text


def test_shape_errors():
    with pytest.raises(ValueError):
        pck(np.zeros((2, 36, 2)), np.zeros((3, 36, 3)))
