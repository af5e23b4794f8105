"""``pose.predict_images``: a folder of images -> keypoints.csv and poses.npz, without leftovers."""
import cv2
import numpy as np

from pamtri.data.labels import read_reid_csv
from pamtri.pose.codec import HeatmapCodec
from pamtri.pose.predict import PosePredictor
from pamtri.pose.predict_images import predict_images
from tests.pose.test_predict import MarkerModel, _marker_image


def _folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    arrays = [_marker_image(80, 60, [(20 + 5 * i, 30), (40, 15 + 3 * i), (60, 45)]) for i in range(3)]
    names = ["0007_c001_00000001_0.jpg", "0007_c002_00000002_0.jpg", "street.png"]
    for name, im in zip(names, arrays):
        cv2.imwrite(str(images / name), cv2.cvtColor(im, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100])
    return images, names


def test_predict_images_writes_csv_and_npz_and_removes_its_scratch_file(tmp_path):
    images, names = _folder(tmp_path)
    predictor = PosePredictor(MarkerModel(), HeatmapCodec((64, 64), (16, 16)), flip_test=False, device="cpu")
    out = tmp_path / "pred"
    n, paths = predict_images(predictor, images, out, batch_size=2, workers=0, vis=2)
    assert n == 3 and paths == [out / "keypoints.csv", out / "poses.npz", out / "vis.png"]
    assert sorted(p.name for p in out.iterdir()) == ["keypoints.csv", "poses.npz", "vis.png"]  # no scratch left
    z = np.load(out / "poses.npz")
    assert list(z["names"]) == sorted(names)
    assert z["heatmaps"].shape == (3, 36, 16, 16) and z["heatmaps"].dtype == np.float16
    assert z["image_sizes"].tolist() == [[80, 60]] * 3
    from pamtri.data.images import read_image
    kps, hms = predictor.predict_arrays([read_image(str(images / nm)) for nm in z["names"]])
    np.testing.assert_allclose(z["keypoints"], kps, atol=1e-5)
    np.testing.assert_allclose(z["heatmaps"], hms.astype(np.float16))
    recs = read_reid_csv(out / "keypoints.csv")
    assert [r.vehicle_id for r in recs] == [7, 7, -1]  # the identity of VeRi-style names, else unlabelled
    np.testing.assert_allclose(recs[0].keypoints[:, :2], kps[0, :, :2], atol=1e-3)


def test_predict_images_without_heatmaps(tmp_path):
    images, _ = _folder(tmp_path)
    predictor = PosePredictor(MarkerModel(), HeatmapCodec((64, 64), (16, 16)), flip_test=False, device="cpu")
    n, paths = predict_images(predictor, images, tmp_path / "pred", workers=0, heatmaps=False)
    assert n == 3 and len(paths) == 2
    assert set(np.load(paths[1]).files) == {"names", "image_sizes", "keypoints"}
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["keypoints.csv", "poses.npz"]
