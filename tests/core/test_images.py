"""core.images.load_image on every odd image a user can upload."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from core.images import ImageError, load_image


def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_16bit_png_is_rescaled_not_clipped(tmp_path):
    arr = np.full((8, 8), 32768, dtype=np.uint16)       # mid grey in 16 bit
    arr[0, 0] = 65535
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    out = load_image(path)
    assert out.mode == "RGB"
    px = np.asarray(out)
    assert abs(int(px[4, 4, 0]) - 128) <= 1             # not 255 (what convert("RGB") would give)
    assert px[0, 0].tolist() == [255, 255, 255]


def test_rgba_transparent_pixels_become_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))        # fully transparent black
    img.putpixel((0, 0), (255, 0, 0, 255))
    out = np.asarray(load_image(_png_bytes(img)))
    assert out[3, 3].tolist() == [255, 255, 255]
    assert out[0, 0].tolist() == [255, 0, 0]


def test_la_and_palette_with_transparency():
    la = Image.new("LA", (4, 4), (0, 0))
    assert np.asarray(load_image(_png_bytes(la)))[0, 0].tolist() == [255, 255, 255]
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    p.info["transparency"] = 0
    out = np.asarray(load_image(_png_bytes(p, transparency=0)))
    assert out[0, 0].tolist() == [0, 255, 0]             # index 1 is opaque green
    p2 = Image.new("P", (4, 4), 0)
    p2.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    assert np.asarray(load_image(_png_bytes(p2, transparency=0)))[0, 0].tolist() == [255, 255, 255]


def test_cmyk_jpeg_and_greyscale(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, format="JPEG", quality=95)   # red in CMYK
    out = np.asarray(load_image(path))
    assert out.shape == (16, 16, 3)
    r, g, b = out[8, 8].tolist()
    assert r > 200 and g < 60 and b < 60
    grey = load_image(_png_bytes(Image.new("L", (5, 3), 77)))
    assert grey.size == (5, 3) and np.asarray(grey)[0, 0].tolist() == [77, 77, 77]


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(path).n_frames == 2
    r, g, b = np.asarray(load_image(path))[4, 4].tolist()
    assert r > 200 and b < 60


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (20, 10), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6                                     # rotate 90 degrees on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    assert load_image(buf.getvalue()).size == (10, 20)


def test_truncated_jpeg_names_the_file(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="cut.jpg.*truncated"):
        load_image(path)


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"this is plain text, not an image\n", "not an image"),
])
def test_empty_and_text_files(tmp_path, content, message):
    path = tmp_path / "fake.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=rf"fake.png.*{message}"):
        load_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="nope.png: file not found"):
        load_image(tmp_path / "nope.png")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def make_bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of zeros, streamed through zlib: tiny on disk, huge decoded."""
    row = b"\x00" * (1 + (width + 7) // 8)              # filter byte + packed bits
    comp = zlib.compressobj(9)
    chunks = []
    block = row * 256
    for _ in range(height // 256):
        chunks.append(comp.compress(block))
    chunks.append(comp.compress(row * (height % 256)))
    chunks.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(chunks))
            + _png_chunk(b"IEND", b""))


def test_decompression_bomb_refused_before_decoding(tmp_path, monkeypatch):
    data = make_bomb_png(30000, 30000)
    assert len(data) < 1_000_000                        # small file, 900 M pixels
    path = tmp_path / "bomb.png"
    path.write_bytes(data)

    def no_decoding(self, *a, **k):                     # the refusal must come from the header alone
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    with pytest.raises(ImageError, match=r"bomb.png.*(30000x30000|decompression bomb)"):
        load_image(path)
    # Below Pillow's own bomb threshold our limit still applies.
    small_bomb = make_bomb_png(7000, 7000)               # 49 M pixels > default 40 M
    with pytest.raises(ImageError, match="7000x7000.*refused before decoding"):
        load_image(small_bomb, name="upload.png")


def test_pixel_limit_is_a_parameter():
    img = _png_bytes(Image.new("RGB", (100, 100)))
    with pytest.raises(ImageError, match="limit of 5,000"):
        load_image(img, max_pixels=5000)
    assert load_image(img, max_pixels=10_000).size == (100, 100)
