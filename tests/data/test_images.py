import cv2
import numpy as np
import pytest

from pamtri.common.errors import DataError
from pamtri.data.images import read_image


def write(path, img):
    assert cv2.imwrite(str(path), img)
    return path


def test_colour_jpeg_is_rgb(tmp_path):
    img = np.zeros((20, 30, 3), np.uint8)
    img[..., 2] = 255  # red in BGR
    out = read_image(write(tmp_path / "a.png", img))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("kind", ["gray", "rgba", "16bit"])
def test_odd_formats_are_converted(tmp_path, kind):
    if kind == "gray":
        img = np.full((10, 12), 77, np.uint8)
    elif kind == "rgba":
        img = np.zeros((10, 12, 4), np.uint8)
        img[..., 1] = 200
        img[..., 3] = 10
    else:
        img = np.full((10, 12, 3), 50000, np.uint16)
    out = read_image(write(tmp_path / f"{kind}.png", img))
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8
    expected = {"gray": [77, 77, 77], "rgba": [0, 200, 0], "16bit": [50000 >> 8] * 3}[kind]
    assert out[3, 3].tolist() == expected


def test_huge_image_is_shrunk(tmp_path):
    p = write(tmp_path / "big.png", np.zeros((300, 5000, 3), np.uint8))
    out = read_image(p, max_side=1000)
    assert out.shape == (60, 1000, 3)


@pytest.mark.parametrize("case,match", [
    ("missing", "not found"), ("empty", "empty"), ("dir", "is a folder"), ("corrupt", "cannot decode"),
    ("truncated", "truncated JPEG"), ("tiny", "1x1 pixels"),
])
def test_broken_images_name_file_and_problem(tmp_path, case, match):
    p = tmp_path / f"{case}.jpg"
    if case == "empty":
        p.write_bytes(b"")
    elif case == "dir":
        p.mkdir()
    elif case == "corrupt":
        p.write_bytes(b"this is not an image at all" * 10)
    elif case == "truncated":
        ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        p.write_bytes(buf.tobytes()[: len(buf) // 2])
    elif case == "tiny":
        write(p, np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(DataError, match=match) as err:
        read_image(p)
    assert str(p) in str(err.value)


def test_10000_pixel_jpeg_is_decoded_reduced_and_resized(tmp_path):
    """A 10000 x 10000 JPEG is decoded by libjpeg at 1/2 scale (never 300 MB), then resized to max_side."""
    p = tmp_path / "huge.jpg"
    img = np.zeros((10000, 10000, 3), np.uint8)
    img[:, 5000:] = (0, 0, 255)  # right half red (BGR)
    assert cv2.imwrite(str(p), img)
    del img
    out = read_image(p)
    assert out.shape == (4096, 4096, 3) and out.dtype == np.uint8
    assert out[2048, 1000].tolist() == [0, 0, 0] and abs(int(out[2048, 3000, 0]) - 255) <= 2
    from pamtri.data import images
    flags = images._reduced_jpeg_flags(np.fromfile(p, np.uint8), images.MAX_SIDE)
    assert flags == cv2.IMREAD_REDUCED_COLOR_2
    assert images._reduced_jpeg_flags(np.fromfile(p, np.uint8), None) is None


def test_full_size_when_asked(tmp_path):
    p = write(tmp_path / "wide.png", np.zeros((30, 5000, 3), np.uint8))
    assert read_image(p, max_side=None).shape == (30, 5000, 3)
    assert read_image(p, max_side=1000).shape == (6, 1000, 3)


def test_header_and_small_size_messages(tmp_path):
    from pamtri.data.images import image_header, too_small
    assert image_header(write(tmp_path / "a.png", np.zeros((9, 13, 4), np.uint8))) == (13, 9, 4)
    assert too_small(1, 1) == "image is 1x1 pixels, smaller than the minimum 4x4"
    assert too_small(4, 4) is None
