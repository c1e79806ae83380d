"""Tests of app.imaging: upload preprocessing to MNIST form, its error classes, and PNG rendering.

Every input is built with Pillow (tests/builders/images.py; nothing is downloaded). The reference digit is an
asymmetric "7" with a crossbar, so rotations and flips are visible; most tests compare a variant's result with
the clean version's.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageSequence

from app.imaging import (
    SUPPORTED_FORMATS,
    BlankImage,
    ImageError,
    ImageTooLarge,
    UnreadableImage,
    UnsupportedImage,
    preprocess_upload,
    to_png,
)
from tests.builders.images import (
    animated_gif,
    digit_mask,
    encode,
    gif_declaring,
    gif_frames,
    paper_digit,
    png_declaring,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")


# --- measuring results ------------------------------------------------------------------------------------


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images' pixels."""
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def centre_of_mass(pixels: np.ndarray) -> tuple[float, float]:
    """(row, column) centre of mass of an image's intensity."""
    rows, cols = np.indices(pixels.shape)
    return float((pixels * rows).sum() / pixels.sum()), float((pixels * cols).sum() / pixels.sum())


def assert_valid_input(out: np.ndarray) -> None:
    """The contract of preprocess_upload's result: float32 (28, 28), finite, in [0, 1], whole grey levels."""
    assert out.dtype == np.float32
    assert out.shape == (28, 28)
    assert np.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out * 255, np.rint(out * 255), atol=1e-3)


def assert_mnist_digit(out: np.ndarray) -> None:
    """A processed digit: white on black, peak 1, longer side 20 px, centre of mass at the centre."""
    assert_valid_input(out)
    assert out.max() == 1.0
    assert out[0].max() == 0 and out[-1].max() == 0 and out[:, 0].max() == 0 and out[:, -1].max() == 0
    rows, cols = np.nonzero(out > 0)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 in (20, 21)  # 21: a resampled fringe
    centre_y, centre_x = centre_of_mass(out)
    assert abs(centre_y - 13.5) <= 1 and abs(centre_x - 13.5) <= 1


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The clean black-on-white digit, processed: what every variant should look like."""
    out = preprocess_upload(encode(paper_digit()))
    assert_mnist_digit(out)
    return out


# --- the MNIST form -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_format", ["PNG", "BMP", "TIFF", "GIF", "WEBP"])
def test_mnist_style_28x28_passes_through_byte_for_byte(reference: np.ndarray, image_format: str) -> None:
    pixels = np.rint(reference * 255).astype(np.uint8)
    pixels[3, 3] = 77  # an off-centre speck the pipeline would crop or move: it must survive untouched
    params = {"lossless": True} if image_format == "WEBP" else {}
    out = preprocess_upload(encode(Image.fromarray(pixels), image_format, **params))
    np.testing.assert_array_equal(np.rint(out * 255).astype(np.uint8), pixels)
    np.testing.assert_array_equal(out, pixels.astype(np.float32) / 255)  # exactly pixels / 255, as float32


def test_sixteen_bit_mnist_style_passes_through(reference: np.ndarray) -> None:
    pixels = np.rint(reference * 255).astype(np.uint16)
    out = preprocess_upload(encode(Image.fromarray(pixels * 257)))  # the same image at 16 bits
    np.testing.assert_array_equal(np.rint(out * 255).astype(np.uint16), pixels)


def test_black_on_white_digit_is_inverted(reference: np.ndarray) -> None:
    inverted_mnist = 255 - np.rint(reference * 255).astype(np.uint8)
    out = preprocess_upload(encode(Image.fromarray(inverted_mnist)))
    assert_mnist_digit(out)
    assert correlation(out, reference) > 0.95
    assert out[out > 0].size < 0.4 * out.size  # the paper became black, not the ink


def test_large_clean_digit_is_cropped_scaled_and_centred() -> None:
    small_digit = Image.new("L", (600, 400), 255)
    small_digit.paste(paper_digit(120), (30, 250))  # far off-centre in a wide image
    out = preprocess_upload(encode(small_digit))
    assert_mnist_digit(out)
    assert correlation(out, preprocess_upload(encode(paper_digit(120)))) > 0.99


# --- transparency, bit depth, palettes, colour spaces -------------------------------------------------------


@pytest.mark.parametrize(
    ("stroke", "transparent"),
    [
        ((0, 0, 0, 255), (0, 0, 0, 0)),
        ((255, 255, 255, 255), (0, 0, 0, 0)),
        ((20, 30, 200, 255), (255,) * 3 + (0,)),
    ],
    ids=["dark-on-transparent-black", "white-on-transparent", "blue-on-transparent-white"],
)
def test_canvas_export_strokes_on_transparency(
    reference: np.ndarray, stroke: tuple, transparent: tuple
) -> None:
    rgba = np.empty((200, 200, 4), np.uint8)
    rgba[...] = transparent
    rgba[digit_mask()] = stroke
    out = preprocess_upload(encode(Image.fromarray(rgba)))
    assert_mnist_digit(out)
    assert correlation(out, reference) > 0.98


def test_antialiased_canvas_alpha_edges_are_ink_weight(reference: np.ndarray) -> None:
    alpha = np.asarray(
        Image.fromarray(digit_mask().astype(np.uint8) * 255).resize((100, 100), Image.Resampling.BOX)
    )
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgba[..., 3] = alpha  # black ink whose coverage lives only in alpha
    out = preprocess_upload(encode(Image.fromarray(rgba)))
    assert_mnist_digit(out)
    assert correlation(out, reference) > 0.95


def test_picture_with_transparent_padding_keeps_its_own_paper(reference: np.ndarray) -> None:
    rgba = np.zeros((300, 300, 4), np.uint8)
    rgba[50:250, 50:250, :3] = np.where(digit_mask(), 30, 230)[..., None]
    rgba[50:250, 50:250, 3] = 255
    out = preprocess_upload(encode(Image.fromarray(rgba)))
    assert correlation(out, reference) > 0.98  # the paper square is background, not a giant "ink" block


def test_sixteen_bit_png_is_read_at_true_range(reference: np.ndarray) -> None:
    pixels = np.where(digit_mask(), 20000, 60000).astype(np.uint16)
    data = encode(Image.fromarray(pixels))
    opened = Image.open(io.BytesIO(data))
    assert opened.mode == "I;16"
    assert len(np.unique(np.asarray(opened.convert("L")))) == 1  # clipping to 8 bits would lose the digit
    out = preprocess_upload(data)
    assert_mnist_digit(out)
    assert correlation(out, reference) > 0.98


@pytest.mark.parametrize(
    ("palette", "transparency", "image_format"),
    [
        ([255, 230, 0, 0, 0, 180], None, "PNG"),  # index 0: yellow paper, 1: dark blue ink
        ([0, 0, 0, 0, 0, 0], 0, "PNG"),  # black ink on transparent black, like a canvas export
        ([0, 0, 0, 0, 0, 0], 0, "GIF"),
    ],
    ids=["png-colours", "png-transparent", "gif-transparent"],
)
def test_palette_image_reads_palette_colours_and_transparency(
    reference: np.ndarray, palette: list[int], transparency: int | None, image_format: str
) -> None:
    image = Image.fromarray(digit_mask().astype(np.uint8)).convert("P")
    image.putpalette(palette + [0] * (768 - len(palette)))
    params = {} if transparency is None else {"transparency": transparency}
    data = encode(image, image_format, **params)
    assert Image.open(io.BytesIO(data)).mode == "P"
    out = preprocess_upload(data)
    assert_mnist_digit(out)
    assert correlation(out, reference) > 0.98


@pytest.mark.parametrize("image_format", ["JPEG", "TIFF"])
def test_cmyk_image_is_converted_through_rgb(reference: np.ndarray, image_format: str) -> None:
    cmyk = np.zeros((200, 200, 4), np.uint8)
    cmyk[digit_mask(), 3] = 255  # black (K) ink on blank paper
    data = encode(Image.frombytes("CMYK", (200, 200), cmyk.tobytes()), image_format)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = preprocess_upload(data)
    assert_mnist_digit(out)
    assert correlation(out, reference) > 0.98


@pytest.mark.parametrize("image_format", FORMATS)
def test_every_supported_format_gives_the_digit(reference: np.ndarray, image_format: str) -> None:
    data = encode(paper_digit().convert("RGB"), image_format)
    assert Image.open(io.BytesIO(data)).format == image_format
    out = preprocess_upload(data)
    assert_mnist_digit(out)
    assert correlation(out, reference) > 0.97
    assert image_format in SUPPORTED_FORMATS


@pytest.mark.parametrize("orientation", range(2, 9))
@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(reference: np.ndarray, orientation: int, image_format: str) -> None:
    # Store the pixels as a camera would (sideways/mirrored) with the tag that says how to show them upright.
    stored_as = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }[orientation]
    stored = paper_digit().transpose(stored_as)
    exif = Image.Exif()
    exif[274] = orientation
    out = preprocess_upload(encode(stored, image_format, exif=exif.tobytes()))
    without_tag = preprocess_upload(encode(stored, image_format))
    assert correlation(out, reference) > 0.99
    assert correlation(without_tag, reference) < 0.6  # the shape really is asymmetric
    if image_format == "PNG":
        np.testing.assert_array_equal(out, reference)


# --- photos and odd shapes ----------------------------------------------------------------------------------


def test_photo_of_ink_on_unevenly_lit_grey_paper(reference: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    paper = np.linspace(0.55, 0.9, 300)[None, :] * np.ones((300, 1))  # light falling off across the page
    photo = np.where(digit_mask(300), 0.2, paper) + rng.normal(0, 0.03, (300, 300))
    data = encode(Image.fromarray(np.clip(photo * 255, 0, 255).astype(np.uint8)), "JPEG", quality=85)
    out = preprocess_upload(data)
    assert_mnist_digit(out)
    assert correlation(out, reference) > 0.95
    assert (out[reference == 0] < 0.1).mean() > 0.97  # the paper texture did not turn into ink


def test_photo_of_dark_ink_on_mid_grey_vignetted_paper(reference: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:300, :300] / 300 - 0.5
    paper = 0.45 - 0.4 * (x * x + y * y)  # darker than mid grey, darker still in the corners
    photo = np.where(digit_mask(300), 0.08, paper) + rng.normal(0, 0.02, (300, 300))
    out = preprocess_upload(encode(Image.fromarray(np.clip(photo * 255, 0, 255).astype(np.uint8)), "JPEG"))
    assert_mnist_digit(out)
    assert correlation(out, reference) > 0.95


def test_chalk_on_a_dark_board_is_not_inverted(reference: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    board = 0.15 + 0.1 * np.linspace(0, 1, 300)[None, :] + rng.normal(0, 0.03, (300, 300))
    photo = np.where(digit_mask(300), 0.85, board)
    out = preprocess_upload(encode(Image.fromarray(np.clip(photo * 255, 0, 255).astype(np.uint8)), "JPEG"))
    assert_mnist_digit(out)
    assert correlation(out, reference) > 0.95


def test_digit_covering_most_of_the_image_keeps_its_polarity() -> None:
    bold = np.asarray(paper_digit(60, width=18))
    rows, cols = np.nonzero(bold == 0)
    tight = bold[rows.min() - 1 : rows.max() + 2, cols.min() - 1 : cols.max() + 2]  # a 1-px paper margin
    assert (tight == 0).mean() > 0.55  # the ink, not the paper, is the majority
    out = preprocess_upload(encode(Image.fromarray(tight)))
    assert_mnist_digit(out)
    assert correlation(out, preprocess_upload(encode(paper_digit(200, width=60)))) > 0.95


@pytest.mark.parametrize(("height", "width"), [(1, 500), (500, 1), (3, 500), (1, 2_000)])
def test_thin_images_never_collapse_to_zero_pixels(height: int, width: int) -> None:
    line = np.full((height, width), 255, np.uint8)
    line[:, width // 5 : 4 * width // 5] = 0
    if height > width:
        line = np.full((height, width), 255, np.uint8)
        line[height // 5 : 4 * height // 5] = 0
    out = preprocess_upload(encode(Image.fromarray(line)))
    assert_valid_input(out)
    rows, cols = np.nonzero(out)
    long_side, short_side = sorted([np.ptp(cols) + 1, np.ptp(rows) + 1], reverse=True)
    assert long_side == 20
    assert 1 <= short_side <= 2


def test_one_pixel_wide_strokes_are_kept() -> None:
    out = preprocess_upload(encode(paper_digit(300, width=1)))
    assert_mnist_digit(out)
    assert correlation(out, preprocess_upload(encode(paper_digit(300, width=6)))) > 0.6


# --- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (64, 64), 255),
        Image.new("L", (64, 64), 0),
        Image.new("RGB", (64, 64), (90, 120, 200)),
        Image.new("RGBA", (64, 64), (0, 0, 0, 0)),
        Image.new("I;16", (64, 64), 40000),
        Image.new("L", (1, 1), 0),
        Image.fromarray(np.tile(np.linspace(70, 230, 200).astype(np.uint8), (200, 1))),  # a bare gradient
    ],
    ids=["white", "black", "colour", "transparent", "16-bit", "one-pixel", "gradient"],
)
def test_images_without_ink_are_blank(image: Image.Image) -> None:
    with pytest.raises(BlankImage, match="digit"):
        preprocess_upload(encode(image))


def test_paper_noise_alone_is_blank_not_a_digit() -> None:
    noise = 128 + np.random.default_rng(3).normal(0, 6, (300, 300))
    with pytest.raises(BlankImage):
        preprocess_upload(encode(Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8)), "JPEG"))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is a text file pretending to be digit.png\n",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
        b'<path d="M4 4 L24 4 L10 24" stroke="black"/></svg>',
        b'<svg viewBox="0 0 28 28"><circle cx="14" cy="14" r="9"/></svg>',
        bytes(range(256)) * 4,
        b"\x89PN",  # shorter than any signature
    ],
    ids=["zero-bytes", "text", "svg-xml", "svg", "random-bytes", "stub"],
)
def test_non_images_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedImage) as info:
        preprocess_upload(data)
    assert "PNG, JPEG" in str(info.value) or "SVG" in str(info.value)


@pytest.mark.parametrize("image_format", ["PPM", "ICO", "PCX"])
def test_real_images_in_unsupported_formats_are_unsupported(image_format: str) -> None:
    data = encode(paper_digit(64).convert("RGB"), image_format)
    assert Image.open(io.BytesIO(data)).format == image_format  # Pillow itself could read it
    with pytest.raises(UnsupportedImage):
        preprocess_upload(data)


def test_a_file_is_judged_by_its_bytes_not_its_claimed_type(reference: np.ndarray) -> None:
    webp_named_png = encode(paper_digit(), "WEBP")  # whatever name or content type came with it
    assert correlation(preprocess_upload(webp_named_png), reference) > 0.97
    with pytest.raises(UnsupportedImage):  # an HTML page sent as image/png
        preprocess_upload(b"<!DOCTYPE html><html><body><img src='digit.png'></body></html>")


# Truncation: every cut of a supported format maps to UnreadableImage (422) once its signature is there:
# Pillow identifies the format, or the signature does. Cut inside the signature itself, or, for BMP (whose
# two-byte "BM" is too weak a signature to trust), inside the 14-byte file header, nothing says "image",
# so the file is UnsupportedImage (415).
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the truncated EXIF/TIFF it reads
@pytest.mark.parametrize("image_format", FORMATS)
@pytest.mark.parametrize("keep", [0.5, 0.9, 40, 12])
def test_truncated_files_are_unreadable(image_format: str, keep: float) -> None:
    data = encode(paper_digit(120).convert("RGB"), image_format)
    cut = data[: int(len(data) * keep)] if keep < 1 else data[: int(keep)]
    expected = UnsupportedImage if image_format == "BMP" and len(cut) < 14 else UnreadableImage
    with pytest.raises(expected):
        preprocess_upload(cut)


@pytest.mark.parametrize("image_format", FORMATS)
def test_garbage_after_a_valid_signature_is_unreadable(image_format: str) -> None:
    data = encode(paper_digit(120).convert("RGB"), image_format)
    garbage = np.random.default_rng(4).integers(0, 256, len(data), dtype=np.uint8).tobytes()
    with pytest.raises(UnreadableImage, match="truncated or corrupt"):
        preprocess_upload(data[:32] + garbage)


@pytest.mark.parametrize("image_format", ["PNG", "GIF", "WEBP"])
def test_damaged_compressed_data_is_unreadable(image_format: str) -> None:
    # These formats checksum or strictly frame their pixel data; JPEG, BMP and TIFF have no checksum and
    # decode damaged pixel bytes as (damaged) pixels, which the property test below covers.
    data = bytearray(encode(paper_digit(120).convert("RGB"), image_format))
    middle = len(data) // 2
    data[middle : middle + 40] = bytes(b ^ 0xFF for b in data[middle : middle + 40])
    with pytest.raises(UnreadableImage):
        preprocess_upload(bytes(data))


@pytest.mark.parametrize(
    "data",
    [
        png_declaring(100_000, 100_000),
        gif_declaring(65_535, 65_535),
        gif_declaring(65_535, 65_535, screen=(10, 10)),  # a tiny screen whose first frame is huge
        png_declaring(5_000, 5_000),  # under Pillow's own bomb limit: caught by max_pixels alone
        gif_declaring(5_000, 5_000, screen=(10, 10)),
    ],
    ids=["png-10-gigapixels", "gif-4-gigapixels", "gif-huge-frame", "png-25-megapixels", "gif-25-megapixels"],
)
def test_decompression_bombs_are_too_large_and_fast(data: bytes) -> None:
    assert len(data) < 4096
    started = time.perf_counter()
    with pytest.raises(ImageTooLarge, match="pixels"):
        preprocess_upload(data)
    assert time.perf_counter() - started < 1.0


def test_pixel_cap_is_per_call() -> None:
    data = encode(paper_digit(200))
    with pytest.raises(ImageTooLarge, match="40,000 pixels, over the limit of 39,999"):
        preprocess_upload(data, max_pixels=39_999)
    assert_mnist_digit(preprocess_upload(data, max_pixels=40_000))


def test_hostile_uploads_keep_memory_bounded(tmp_path: Path) -> None:
    uploads = [
        png_declaring(100_000, 100_000),
        gif_declaring(65_535, 65_535, screen=(10, 10)),
        png_declaring(5_000, 5_000),
        png_declaring(4_000, 4_000, b"\0" * 4_001 * 4_000),  # a real 16-megapixel black image in 16 KB
    ]
    for index, data in enumerate(uploads):
        (tmp_path / f"{index}.bin").write_bytes(data)
    # A fresh interpreter, so the peak RSS it reports belongs to these uploads alone.
    script = textwrap.dedent(
        """
        import pathlib, resource, sys
        sys.path.insert(0, sys.argv[1])
        from app.imaging import ImageError, preprocess_upload
        uploads = [path.read_bytes() for path in sorted(pathlib.Path(sys.argv[2]).glob("*.bin"))]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        outcomes = []
        for data in uploads:
            try:
                preprocess_upload(data)
                outcomes.append("ok")
            except ImageError as exc:
                outcomes.append(type(exc).__name__)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(",".join(outcomes), (after - before) // 1024)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(REPO_ROOT), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    outcomes, growth_mb = result.stdout.split()
    assert max(len(data) for data in uploads) < 20_000
    assert outcomes == "ImageTooLarge,ImageTooLarge,ImageTooLarge,BlankImage"  # the last one decodes, blank
    assert int(growth_mb) < 200  # ru_maxrss is in KiB on Linux


def test_animated_gif_uses_its_first_frame_only() -> None:
    frames = gif_frames(50)  # the digit, then 49 different frames, so the encoder cannot merge them
    data = animated_gif(frames)
    assert len(list(ImageSequence.Iterator(Image.open(io.BytesIO(data))))) == 50
    out = preprocess_upload(data)
    np.testing.assert_array_equal(out, preprocess_upload(encode(frames[0], "GIF")))
    assert correlation(out, preprocess_upload(encode(frames[0]))) > 0.99
    assert correlation(out, preprocess_upload(encode(frames[1]))) < 0.5


def test_error_classes_form_one_family() -> None:
    for error in (ImageTooLarge, UnsupportedImage, UnreadableImage, BlankImage):
        assert issubclass(error, ImageError)
    assert issubclass(ImageError, ValueError)
    assert len({ImageTooLarge, UnsupportedImage, UnreadableImage, BlankImage}) == 4


# --- properties ---------------------------------------------------------------------------------------------

_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F")


def _random_image(mode: str, height: int, width: int, pattern: str, seed: int) -> Image.Image:
    """An image of `mode` whose content is noise, one flat colour, or rectangles on a background."""
    rng = np.random.default_rng(seed)
    if pattern == "noise":
        unit = rng.random((height, width, 4))
    elif pattern == "flat":
        unit = np.broadcast_to(rng.random(4), (height, width, 4)).copy()
    else:  # blobs: a few rectangles of another colour, the nearest thing to strokes on paper
        unit = np.broadcast_to(rng.random(4), (height, width, 4)).copy()
        for _ in range(rng.integers(1, 5)):
            top, left = rng.integers(0, height), rng.integers(0, width)
            unit[top : top + rng.integers(1, height + 1), left : left + rng.integers(1, width + 1)] = (
                rng.random(4)
            )
    if mode in ("I", "F"):
        scale, offset = rng.choice([1.0, 255.0, 65535.0, 1e6]), rng.choice([0.0, -1000.0])
        values = unit[..., 0] * scale + offset
        return Image.fromarray(values.astype(np.int32 if mode == "I" else np.float32))
    if mode == "I;16":
        return Image.fromarray((unit[..., 0] * 65535).astype(np.uint16))
    bytes_ = (unit * 255).astype(np.uint8)
    if mode == "1":
        return Image.fromarray(bytes_[..., 0] > 127)
    if mode == "P":
        return Image.fromarray(bytes_[..., :3]).quantize(colors=int(rng.integers(2, 17)))
    if mode == "CMYK":
        return Image.frombytes("CMYK", (width, height), bytes_.tobytes())
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(bytes_[..., :channels].squeeze(-1) if channels == 1 else bytes_[..., :channels])


def _saveable(mode: str, image_format: str) -> bool:
    try:
        encode(_random_image(mode, 2, 2, "noise", 0), image_format)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


_COMBINATIONS = [(mode, fmt) for mode in _MODES for fmt in FORMATS if _saveable(mode, fmt)]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    combination=st.sampled_from(_COMBINATIONS),
    height=st.integers(1, 80),
    width=st.integers(1, 80),
    pattern=st.sampled_from(["noise", "flat", "blobs"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_any_decodable_image_gives_a_valid_input_or_blank(
    combination: tuple[str, str], height: int, width: int, pattern: str, seed: int
) -> None:
    mode, image_format = combination
    data = encode(_random_image(mode, height, width, pattern, seed), image_format)
    try:
        out = preprocess_upload(data)
    except BlankImage:
        return  # the only refusal a well-formed image within the limits may get
    assert pattern != "flat", "a flat image must be reported blank"
    assert_valid_input(out)
    decoded = np.asarray(Image.open(io.BytesIO(to_png(out))))
    np.testing.assert_array_equal(decoded, np.rint(out * 255).astype(np.uint8))  # the model sees the PNG


_DIGIT_FILES = {fmt: encode(paper_digit(48).convert("RGB"), fmt) for fmt in FORMATS}


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the damaged EXIF/TIFF it reads
@settings(max_examples=150, deadline=None)
@given(
    image_format=st.sampled_from(FORMATS),
    cut=st.just(1.0) | st.floats(0, 1),  # whole files with flipped bytes, or cut anywhere
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=8),
)
def test_property_damaged_files_give_a_valid_input_or_an_image_error(
    image_format: str, cut: float, flips: list[tuple[float, int]]
) -> None:
    data = bytearray(_DIGIT_FILES[image_format])
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    damaged = bytes(data[: max(1, int(cut * len(data)))])
    try:
        out = preprocess_upload(damaged)
    except ImageError as exc:
        assert str(exc).endswith(".")  # a sentence for the user, never a bare Pillow message
        return
    assert_valid_input(out)


# --- PNG rendering ------------------------------------------------------------------------------------------


def test_to_png_is_8_bit_grayscale_of_the_right_size_and_deterministic() -> None:
    pixels = np.random.default_rng(5).random((28, 56)).astype(np.float32)
    data = to_png(pixels)
    decoded = Image.open(io.BytesIO(data))
    assert (decoded.format, decoded.mode, decoded.size) == ("PNG", "L", (56, 28))
    np.testing.assert_array_equal(np.asarray(decoded), np.rint(pixels * 255).astype(np.uint8))
    assert to_png(pixels.copy()) == data


def test_to_png_scales_by_nearest_neighbour_and_inverts() -> None:
    pixels = np.array([[0, 255], [128, 7]], dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(to_png(pixels, scale=3, invert=True))))
    assert decoded.shape == (6, 6)
    np.testing.assert_array_equal(decoded, np.kron(255 - pixels, np.ones((3, 3), np.uint8)))


def test_to_png_round_trips_a_preprocessed_upload(reference: np.ndarray) -> None:
    out = preprocess_upload(to_png(reference, scale=4, invert=True))  # black on white, 112x112
    assert correlation(out, reference) > 0.98


@pytest.mark.parametrize(
    ("pixels", "scale", "error"),
    [
        (np.zeros((2, 2, 3), np.float32), 1, ValueError),
        (np.zeros((0, 5), np.float32), 1, ValueError),
        (np.array([[np.nan]], np.float32), 1, ValueError),
        (np.zeros((2, 2), np.int64), 1, TypeError),
        (np.zeros((2, 2), np.float32), 0, ValueError),
        (np.zeros((2, 2), np.float32), 1.5, ValueError),
    ],
    ids=["rgb", "empty", "nan", "int64", "scale-0", "scale-float"],
)
def test_to_png_rejects_bad_arrays(pixels: np.ndarray, scale: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        to_png(pixels, scale=scale)  # type: ignore[arg-type]
