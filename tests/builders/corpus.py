"""The hostile corpus, generated here (nothing is downloaded): bad uploads, bad JSON, bad multipart.

Each `Hostile` is one request and the answer the contract documents for it (docs/api.md): decompression
bombs of every format declare billions of pixels in a few hundred bytes (413 before decoding), truncated
and corrupt files of every format (422), non-images and empty files (415), and the odd-but-valid images
the service must read (a 50-frame GIF, 16-bit, palette, CMYK, a file lying about its type: 200).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from tests.builders.images import (
    animated_gif,
    bmp_declaring,
    encode,
    gif_declaring,
    gif_frames,
    jpeg_declaring,
    paper_digit,
    png_declaring,
    tiff_declaring,
    webp_declaring,
)

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "BMP": "image/bmp", "GIF": "image/gif"}
MIME |= {"WEBP": "image/webp", "TIFF": "image/tiff"}
HUGE = 100_000  # pixels per side of most bombs: 10 gigapixels


@dataclass(frozen=True)
class Hostile:
    """One request of the corpus and its documented answer."""

    name: str
    path: str
    status: int
    fragment: str = ""  # a piece of the error `detail` (lower case), when it says something specific
    files: dict = field(default_factory=dict)  # httpx `files=`
    data: dict = field(default_factory=dict)  # httpx `data=` (form fields)
    content: bytes | None = None  # a raw body instead of a form
    headers: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    method: str = "POST"


def upload(
    name: str,
    payload: bytes,
    status: int,
    fragment: str = "",
    *,
    filename: str = "d.png",
    mime: str = "image/png",
) -> Hostile:
    """An /encode upload of `payload`."""
    return Hostile(name, "/encode", status, fragment, files={"file": (filename, payload, mime)})


def digit(size: int = 120) -> Image.Image:
    """A black-on-white digit as an 'L' image."""
    return paper_digit(size)


# -- bombs: huge declared sizes in tiny files ---------------------------------------------------------
def bombs() -> list[Hostile]:
    return [
        upload("png-bomb-10-gigapixels", png_declaring(HUGE, HUGE), 413, "pixels"),
        upload("png-bomb-25-megapixels", png_declaring(5_000, 5_000), 413, "pixels"),
        upload("gif-bomb-4-gigapixels", gif_declaring(65_535, 65_535), 413, "pixels", mime="image/gif"),
        upload("gif-huge-frame-tiny-screen", gif_declaring(65_535, 65_535, (10, 10)), 413, "pixels"),
        upload("jpeg-bomb-4-gigapixels", jpeg_declaring(65_500, 65_500), 413, "pixels", mime="image/jpeg"),
        upload("webp-bomb-268-megapixels", webp_declaring(16_384, 16_384), 413, "pixels", mime="image/webp"),
        upload("bmp-bomb-10-gigapixels", bmp_declaring(HUGE, HUGE), 413, "pixels", mime="image/bmp"),
        upload("tiff-bomb-10-gigapixels", tiff_declaring(HUGE, HUGE), 413, "pixels", mime="image/tiff"),
        # exactly at the 16-megapixel cap: it is decoded (16 KB of zeros inflating to 16 MB), and is blank
        upload("png-16-megapixels-of-black", png_declaring(4_000, 4_000, b"\0" * 4_001 * 4_000), 422, "flat"),
    ]


# -- damaged files ------------------------------------------------------------------------------------
def damaged() -> list[Hostile]:
    garbage = np.random.default_rng(6).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    items = []
    for image_format in FORMATS:
        data = encode(digit().convert("RGB"), image_format)
        mime = MIME[image_format]
        items.append(upload(f"{image_format.lower()}-truncated-half", data[: len(data) // 2], 422, mime=mime))
        items.append(
            upload(f"{image_format.lower()}-corrupt-after-header", data[:32] + garbage, 422, mime=mime)
        )
    return items


def not_images() -> list[Hostile]:
    svg = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
    svg += b'<path d="M4 4L24 24" stroke="white"/></svg>'
    html = b"<!DOCTYPE html><html><body><img src='digit.png'></body></html>"
    random = np.random.default_rng(7).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    return [
        upload("body-6-mb-with-content-length", b"\x89PNG" + bytes(6_000_000), 413, "byte limit"),
        upload("zero-bytes", b"", 415, "empty"),
        upload("svg", svg, 415, "svg", filename="d.svg", mime="image/svg+xml"),
        upload("text-named-png", b"just some text, not a digit\n" * 10, 415, "not a supported image"),
        upload("html-named-png", html, 415, "not a supported image"),
        upload("random-bytes", random, 415, "not a supported image", mime="application/octet-stream"),
    ]


# -- odd but valid images: the service reads them -----------------------------------------------------
def valid_oddities() -> list[Hostile]:
    # 16-bit ink and paper that clip to the same 8-bit level: read at true range or the digit is lost
    sixteen = Image.fromarray(np.where(np.asarray(digit()) < 128, 20_000, 60_000).astype(np.uint16))
    palette = digit().convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    cmyk = digit().convert("CMYK")
    return [
        upload("gif-50-frames", animated_gif(gif_frames(50)), 200, mime="image/gif", filename="d.gif"),
        upload("png-16-bit", encode(sixteen, "PNG"), 200),
        upload("png-palette", encode(palette, "PNG"), 200),
        upload("jpeg-cmyk", encode(cmyk, "JPEG"), 200, mime="image/jpeg", filename="d.jpg"),
        upload("tiff-cmyk", encode(cmyk, "TIFF"), 200, mime="image/tiff", filename="d.tif"),
        upload("png-named-jpg-sent-as-gif", encode(digit(), "PNG"), 200, filename="d.jpg", mime="image/gif"),
    ]


# -- bodies that are not what they claim --------------------------------------------------------------
JSON = {"content-type": "application/json"}


def json_body(name: str, content: bytes, status: int, fragment: str = "") -> Hostile:
    return Hostile(name, "/generate", status, fragment, content=content, headers=JSON)


def bad_json() -> list[Hostile]:
    return [
        json_body(
            "json-nested-100k-deep", b'{"text": "1", "style": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400
        ),
        json_body("json-5000-digit-integer", b'{"text": "1", "samples": ' + b"9" * 5000 + b"}", 400),
        json_body("json-not-utf8", b'{"text": "\xff\xfe"}', 400),
        json_body("json-nan", b'{"text": "1", "temperature": NaN}', 422),
        json_body("json-infinity", b'{"text": "1", "style": [Infinity, 0, 0, 0]}', 422),
        json_body("json-style-beyond-float32", b'{"text": "1", "style": [1e200, 0, 0, 0]}', 422, "float32"),
        json_body("json-1e400", b'{"text": "1", "temperature": 1e400}', 422),
        json_body("json-arabic-indic-digits", '{"text": "\u0664\u0662"}'.encode(), 422, "ascii digits"),
        json_body("json-null-byte", b'{"text": "1\\u0000"}', 422, "ascii digits"),
        json_body("json-top-level-array", b"[1, 2, 3]", 422),
        json_body("json-truncated", b'{"text": "1', 422),
        json_body(
            "json-1024-style-values", b'{"text": "1", "style": [' + b", ".join([b"0.5"] * 1024) + b"]}", 422
        ),
    ]


def multipart(
    name: str, parts: list[bytes], status: int, fragment: str = "", boundary: str = "b0und"
) -> Hostile:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    body += b"--" + boundary.encode() + b"--\r\n"
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    return Hostile(name, "/encode", status, fragment, content=body, headers=headers)


def field_part(name: str, value: bytes) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value


def file_part(payload: bytes, name: str = "file") -> bytes:
    head = (
        f'Content-Disposition: form-data; name="{name}"; filename="d.png"\r\nContent-Type: image/png\r\n\r\n'
    )
    return head.encode() + payload


def bad_multipart() -> list[Hostile]:
    png = encode(digit(), "PNG")
    return [
        multipart(
            "multipart-5000-fields", [field_part(f"f{i}", b"x") for i in range(5000)], 400, "too many fields"
        ),
        multipart("multipart-1001-files", [file_part(b"x") for _ in range(1001)], 400, "too many files"),
        multipart(
            "multipart-label-of-2mb",
            [field_part("label", b"7" * 2_000_000), file_part(png)],
            400,
            "maximum size",
        ),
        Hostile(
            "multipart-without-boundary",
            "/encode",
            400,
            "boundary",
            content=b"--x\r\n\r\n",
            headers={"content-type": "multipart/form-data"},
        ),
        Hostile(
            "multipart-garbage",
            "/encode",
            400,
            content=b"\0garbage\r\n--b0und--",
            headers={"content-type": "multipart/form-data; boundary=b0und"},
        ),
        Hostile(
            "image-body-without-form", "/encode", 422, content=png, headers={"content-type": "image/png"}
        ),
        # many parts that fit the limits are just a request with unknown fields: answered normally
        multipart(
            "multipart-999-fields-and-a-digit",
            [field_part(f"f{i}", b"x") for i in range(999)] + [file_part(png)],
            200,
        ),
    ]


def bad_paths() -> list[Hostile]:
    """Traversal attempts at the routes that take a version name: none may reach a file."""
    gets = [
        "/v1/models/%2e%2e/samples.png",
        "/v1/models/..%2F..%2F..%2Fetc/samples.png",
        "/v1/models/v0001/..%2F..%2Fmetadata.json",
        "/static/..%2F..%2Fsettings.py",
    ]
    items = [Hostile(f"get-{path}", path, 404, method="GET") for path in gets]
    items.append(
        Hostile("get-weights-file", "/v1/models/v0001/model.safetensors", 422, "samples.png", method="GET")
    )
    for version in ("../v0001", "v0001/../v0001", "/etc/passwd"):
        items.append(
            Hostile(
                f"version={version}",
                "/generate",
                404,
                "unknown model version",
                content=b'{"text": "1"}',
                headers=JSON,
                params={"version": version},
            )
        )
    return items


def corpus() -> list[Hostile]:
    """Every request of the corpus."""
    return bombs() + damaged() + not_images() + valid_oddities() + bad_json() + bad_multipart() + bad_paths()
