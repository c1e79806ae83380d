"""Images built for the tests with Pillow (nothing is downloaded): digits, their file bytes, and bombs.

The reference digit is an asymmetric "7" with a crossbar, so rotations and flips are visible. `encode` is
the one way a test turns an image into file bytes. The `*_declaring` builders make small files whose
headers declare a huge size: decompression bombs.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw


def digit_mask(size: int = 200, width: int | None = None) -> np.ndarray:
    """(size, size) bool mask of a "7" with a crossbar: asymmetric under every rotation and flip."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    stroke = width or max(1, size // 12)
    draw.line([(0.25 * size, 0.2 * size), (0.75 * size, 0.2 * size), (0.4 * size, 0.85 * size)], 255, stroke)
    draw.line([(0.35 * size, 0.5 * size), (0.65 * size, 0.5 * size)], 255, stroke)
    return np.asarray(canvas) > 127


def paper_digit(size: int = 200, ink: int = 0, paper: int = 255, width: int | None = None) -> Image.Image:
    """The digit as an 'L' image: `ink` strokes on `paper`."""
    return Image.fromarray(np.where(digit_mask(size, width), ink, paper).astype(np.uint8))


def encode(image: Image.Image, image_format: str = "PNG", **params: object) -> bytes:
    """The bytes of `image` saved in `image_format` (Pillow's save options as `params`)."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue()


def digit_png(digit: np.ndarray) -> bytes:
    """A uint8 array (an MNIST digit) as a greyscale PNG."""
    return encode(Image.fromarray(digit))


def gif_frames(count: int = 50) -> list[Image.Image]:
    """The frames of an animated GIF: the digit, then rings that differ (so an encoder keeps them all)."""
    frames = [paper_digit(100)]
    for index in range(1, count):
        frame = Image.new("L", (100, 100), 255)
        ImageDraw.Draw(frame).ellipse((15, 10 + index % 7, 85, 90), outline=0, width=8)
        frames.append(frame)
    return frames


def animated_gif(frames: list[Image.Image]) -> bytes:
    """The frames as one animated GIF file."""
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40)


# -- decompression bombs: huge declared sizes in tiny files --------------------------------------------------
def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int, body: bytes = b"\0" * 1000) -> bytes:
    """A PNG whose header declares width x height grey pixels, followed by `body` compressed."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    idat = png_chunk(b"IDAT", zlib.compress(body, 9))
    return b"\x89PNG\r\n\x1a\n" + header + idat + png_chunk(b"IEND", b"")


def gif_declaring(width: int, height: int, screen: tuple[int, int] | None = None) -> bytes:
    """A GIF whose only frame declares width x height (its screen too, unless given), with a few LZW bytes."""
    screen_width, screen_height = screen or (width, height)
    screen_bytes = struct.pack("<HHBBB", screen_width, screen_height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen_bytes + frame + b";"


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) is patched to declare width x height."""
    data = bytearray(encode(paper_digit(64), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_declaring(width: int, height: int) -> bytes:
    """A small lossless WebP whose VP8L header is patched to declare width x height (at most 16384)."""
    data = bytearray(encode(paper_digit(64), "WEBP", lossless=True))
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    bits = struct.unpack("<I", data[21:25])[0] & ~((1 << 28) - 1)
    data[21:25] = struct.pack("<I", bits | (width - 1) | ((height - 1) << 14))
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    """A small BMP whose info header is patched to declare width x height."""
    data = bytearray(encode(paper_digit(64), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def tiff_declaring(width: int, height: int) -> bytes:
    """A small TIFF whose ImageWidth/ImageLength tags are patched to declare width x height."""
    data = bytearray(encode(paper_digit(64), "TIFF"))
    assert data[:4] == b"II*\x00"
    ifd = struct.unpack("<I", data[4:8])[0]
    for index in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        entry = ifd + 2 + 12 * index
        tag = struct.unpack("<H", data[entry : entry + 2])[0]
        if tag in (256, 257):  # ImageWidth, ImageLength: LONG, one value
            data[entry + 2 : entry + 12] = struct.pack("<HII", 4, 1, width if tag == 256 else height)
    return bytes(data)
