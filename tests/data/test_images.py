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


def write_png_bomb(path, side: int = 20000) -> None:
    """A ``side`` x ``side`` black RGB PNG (about 1 MB for 20000), streamed: never ``side``^2 bytes in memory."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    comp, rows, idat = zlib.compressobj(9), bytes(256 * (1 + 3 * side)), []
    for _ in range(side // 256):
        idat.append(comp.compress(rows))
    idat.append(comp.compress(bytes((side % 256) * (1 + 3 * side))) + comp.flush())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b""))


_PROBE = """
import sys
import numpy as np
if sys.argv[1] == "alloc":
    block = np.ones(400 * 2 ** 20, np.uint8)  # a real allocation of 400 MB, touched
else:
    from pamtri.common.errors import DataError
    from pamtri.data.images import read_image
    try:
        read_image(sys.argv[2], max_side=None if sys.argv[1] == "full" else 4096)
    except DataError as exc:
        print(exc, file=sys.stderr)
# peak resident MB of this process image (ru_maxrss would carry the forking parent's peak across exec)
print(next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM")) // 1024)
"""


def _peak_mb(*args) -> tuple[int, str]:
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-c", _PROBE, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return int(run.stdout.split()[-1]), run.stderr.strip()


def test_a_png_decompression_bomb_is_refused_from_its_header_in_bounded_memory(tmp_path):
    """Issue 22, case 7: a 1 MB 20000 x 20000 PNG used to be decoded at full size (1.2 GB, 3 GB in embed)."""
    bomb = tmp_path / "bomb.png"
    write_png_bomb(bomb)
    assert bomb.stat().st_size < 2_000_000
    alloc, _ = _peak_mb("alloc")
    assert alloc >= 400  # the probe sees a real allocation
    for mode in ("reduced", "full"):
        peak, err = _peak_mb(mode, bomb)
        assert err == (f"{bomb}: image is 20000x20000 pixels, more than the 100,000,000 a decode may produce (a "
                       "decompression bomb?); shrink it first")
        assert peak < 300, peak


def test_the_pixel_limit_reads_every_format_header(tmp_path):
    from pamtri.data import images
    img = np.zeros((30, 70, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".webp", ".tif"):
        p = tmp_path / f"x{ext}"
        assert cv2.imwrite(str(p), img)
        assert images.pixel_size(np.fromfile(p, np.uint8)) == (70, 30), ext
    lossless = tmp_path / "l.webp"
    assert cv2.imwrite(str(lossless), img, [cv2.IMWRITE_WEBP_QUALITY, 101])
    assert images.pixel_size(np.fromfile(lossless, np.uint8)) == (70, 30)
    out, size = images.read_image_and_size(tmp_path / "x.tif")
    assert out.shape == (30, 70, 3) and size == (70, 30)
