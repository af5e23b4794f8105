"""pamtri.data.images.decode_image: the bytes of an upload, with read_image's checks."""
import cv2
import numpy as np
import pytest

from pamtri.common.errors import DataError
from pamtri.data.images import decode_image, read_image
from tests.data.test_images import write_png_bomb


def test_decoded_bytes_equal_the_file_read(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    for ext in (".jpg", ".png"):
        f = tmp_path / f"a{ext}"
        cv2.imwrite(str(f), rgb[:, :, ::-1])
        assert np.array_equal(decode_image(f.read_bytes(), "upload"), read_image(f))


def test_bad_bytes_are_refused_naming_the_source_before_decoding(tmp_path):
    ok, jpg = cv2.imencode(".jpg", np.zeros((20, 20, 3), np.uint8))
    ok, png = cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))
    write_png_bomb(tmp_path / "bomb.png")
    cases = [(b"", "empty"), (b"GIF89a not a picture", "cannot decode"), (jpg.tobytes()[:200], "truncated JPEG"),
             (png.tobytes()[:60], "cannot decode"), ((tmp_path / "bomb.png").read_bytes(), "decompression bomb")]
    for data, match in cases:
        with pytest.raises(DataError, match=match) as err:
            decode_image(data, "q.png")
        assert str(err.value).startswith("q.png: ")
