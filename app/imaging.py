"""Upload images in, MNIST digits out; pixel arrays in, PNG bytes out.

This module owns everything between the bytes of an uploaded file and the (28, 28) input the model sees, and
the way back from a pixel array to PNG bytes. Uploads follow MNIST's own preprocessing: decode the first frame
of a supported format with the pixel count checked before any pixel is decoded, apply the EXIF orientation,
flatten transparency onto the background, read 16-bit and palette images at their true intensities, level
the background and invert a light one, crop to the ink, scale the longer side to 20 px and paste the digit
centred by its centre of mass in 28x28. It knows nothing about HTTP: every problem with an upload is an
`ImageError` subclass, which the service maps to 413, 415 or 422 in one place.

All limits are checked per call (`max_pixels`); Pillow's global `Image.MAX_IMAGE_PIXELS` is left as it is and
stays a second, looser line of defence (its bomb errors are mapped to `ImageTooLarge` too).
"""

from __future__ import annotations

import contextlib
import io
import math
import struct
import zlib
from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from model.config import IMAGE_SIDE

FloatImage = NDArray[np.float32]

DIGIT_BOX = 20  # MNIST fits each digit's longer side to 20 px, then centres it by mass in 28x28

SUPPORTED_FORMATS: frozenset[str] = frozenset({"PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"})
_FORMAT_ALIASES = {"MPO": "JPEG"}  # phone cameras write multi-picture JPEGs, which Pillow opens as MPO
_FORMAT_LIST = "PNG, JPEG, BMP, GIF, WebP or TIFF"
_SIGNATURES: tuple[tuple[str, bytes], ...] = (
    ("PNG", b"\x89PNG\r\n\x1a\n"),
    ("JPEG", b"\xff\xd8\xff"),
    ("GIF", b"GIF87a"),
    ("GIF", b"GIF89a"),
    ("TIFF", b"II*\x00"),
    ("TIFF", b"MM\x00*"),
)

_WORK_SIDE = 512  # levelling runs on a copy at most this long: milliseconds per upload, a few MB of memory
_FIT_SIDE = 64  # the smooth background is fitted on a copy at most this long
_MIN_NOISE = 1 / 255  # below one grey level, noise estimates are quantisation, not paper texture
_MIN_CONTRAST = 8 / 255  # ink fainter than this (after levelling) is JPEG ringing or texture, not a digit
_UNIFORM_RANGE = 2 / 255


class ImageError(ValueError):
    """An uploaded image cannot be used; the message is a sentence the user can act on."""


class ImageTooLarge(ImageError):
    """The image has more pixels than allowed (HTTP 413), including decompression bombs."""


class UnsupportedImage(ImageError):
    """The bytes are not an image in a supported format (HTTP 415)."""


class UnreadableImage(ImageError):
    """The bytes claim a supported format but are truncated, corrupt or cannot be decoded (HTTP 422)."""


class BlankImage(ImageError):
    """The image decodes but holds no ink to read as a digit (HTTP 422)."""


def preprocess_upload(data: bytes, *, max_pixels: int = 16_000_000) -> np.ndarray:
    """Decode an uploaded image into the MNIST-style input: float32 (28, 28) in [0, 1], white ink on black.

    Raises an `ImageError` subclass for every problem with the upload; values are whole grey levels (k / 255).
    """
    gray = _decode_gray(data, max_pixels)  # (H, W), alpha already flattened
    if gray.max() - gray.min() < _UNIFORM_RANGE:
        raise BlankImage("The image is a single flat colour; upload a picture of a handwritten digit.")
    if _is_mnist_style(gray):
        return _quantise(gray)
    ink = _level(gray)  # (H, W) white ink on black, peak 1
    digit = _fit_box(_crop_to_ink(ink))  # (h, w), longer side 20
    return _quantise(_paste_centred(digit))


def to_png(pixels: np.ndarray, *, scale: int = 1, invert: bool = False) -> bytes:
    """Encode a (H, W) array (float in [0, 1] or uint8) as an 8-bit grayscale PNG; deterministic bytes.

    The image is nearest-neighbour upscaled by `scale` and, with `invert`, drawn as black ink on white.
    Written directly rather than through Pillow: with upscaling every source row becomes one row with
    the Sub filter (a pixel minus its left neighbour: zero inside each run of `scale` equal pixels)
    followed by `scale - 1` rows with the Up filter (all zeros), and zlib's run-length strategy packs
    those runs fast. A 7168 x 3584 image takes a tenth of the time Pillow's adaptive filters take, for
    a smaller file.

    The scanlines are made and compressed a block of about `_PNG_BLOCK_BYTES` at a time, in one reused
    buffer: the thread holds the GIL only for short numpy steps (zlib releases it while compressing),
    so encoding a big image never stalls the event loop for long, and no image-sized buffer is
    allocated (first-touching 25 MB of fresh pages took about 90 ms with the GIL held).

    Scanlines of at most `_PNG_STORED_BYTES` (a 56 x 28 "42") are stored without compression, as web
    servers skip compressing tiny bodies: deflate's fixed cost per call (building its Huffman trees,
    about 15 us) is most of such an image's encoding, to save under 2 KB.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    grey = _as_uint8(pixels)
    if invert:
        grey = 255 - grey
    height, width = grey.shape
    row_bytes = 1 + width * scale  # filter byte + pixels
    step = max(1, min(height, _PNG_BLOCK_BYTES // (row_bytes * scale)))  # source rows per block
    block = np.zeros((step * scale, row_bytes), dtype=np.uint8)  # Up rows stay all zero
    block[:, 0] = _PNG_FILTER_UP
    block[::scale, 0] = _PNG_FILTER_SUB
    level = 0 if height * scale * row_bytes <= _PNG_STORED_BYTES else 6
    packer = zlib.compressobj(level, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    parts = []
    for top in range(0, height, step):
        source = grey[top : top + step]
        wide = source.repeat(scale, axis=1) if scale > 1 else source
        first = block[: len(source) * scale : scale]
        first[:, 1] = wide[:, 0]
        np.subtract(wide[:, 1:], wide[:, :-1], out=first[:, 2:])  # modulo 256, as PNG defines it
        parts.append(packer.compress(block[: len(source) * scale].data))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width * scale, height * scale, 8, 0, 0, 0, 0)  # 8-bit grey, no interlace
    idat = b"".join(parts)
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_FILTER_SUB, _PNG_FILTER_UP = 1, 2
_PNG_BLOCK_BYTES = 512 * 1024
_PNG_STORED_BYTES = 4 * 1024


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


# --- decoding and limits ------------------------------------------------------------------------------------


def _decode_gray(data: bytes, max_pixels: int) -> FloatImage:
    """Decode, orient and flatten an upload to grey levels in [0, 1], at most _WORK_SIDE px per side."""
    image = _open_checked(data, max_pixels)
    with _decoding_errors(max_pixels):
        _request_reduced_decode(image)
        image.load()  # the first frame only; later frames of a GIF/WebP/TIFF are never decoded
        _check_pixels(image.size, max_pixels)  # a GIF frame may widen the canvas while loading
        _apply_orientation(image)
        image = _shrink(_normalise_mode(image))
    gray, alpha = _to_arrays(image)
    return _flatten_alpha(gray, alpha)


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Identify a supported format from the bytes alone and check the declared size; decodes no pixels."""
    if not data:
        raise UnsupportedImage(f"The uploaded file is empty; send a {_FORMAT_LIST} image.")
    with _decoding_errors(max_pixels):
        try:
            image = Image.open(io.BytesIO(data), formats=sorted(SUPPORTED_FORMATS))
        except Image.UnidentifiedImageError as exc:
            raise _unidentified(data) from exc
    image_format = _FORMAT_ALIASES.get(image.format or "", image.format)
    if image_format not in SUPPORTED_FORMATS:  # a plugin subclass reporting another name
        raise UnsupportedImage(f"{image.format} images are not supported; send a {_FORMAT_LIST} image.")
    _check_pixels(image.size, max_pixels)
    return image


@contextlib.contextmanager
def _decoding_errors(max_pixels: int) -> Iterator[None]:
    """Turn whatever Pillow raises on hostile bytes into an ImageError; ours and MemoryError pass through."""
    try:
        yield
    except (ImageError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning is an exception only under `-W error`; either way the declared size is too big.
        raise ImageTooLarge(
            f"The image declares far more than the limit of {max_pixels:,} pixels (a decompression bomb?); "
            "send a smaller image."
        ) from exc
    except Exception as exc:  # Pillow's decoders raise OSError, SyntaxError, ValueError, struct.error, ...
        raise UnreadableImage(
            "The image could not be decoded; it may be truncated or corrupt. Re-export it and try again."
        ) from exc


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """Refuse an image whose declared width x height is empty or over the cap."""
    width, height = size
    if width < 1 or height < 1:
        raise UnreadableImage(f"The image declares an empty size ({width}x{height}); re-export it.")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}; "
            "send a smaller image (a digit needs only a few hundred pixels across)."
        )


def _unidentified(data: bytes) -> ImageError:
    """Explain bytes Pillow cannot identify: a damaged supported file (422) or not a supported image (415)."""
    name = _sniff_format(data)
    if name is not None:
        return UnreadableImage(
            f"The file starts like a {name} image but could not be read; it may be truncated or corrupt. "
            "Re-export it and try again."
        )
    if b"<svg" in data[:4096].lower():
        return UnsupportedImage(
            f"SVG (vector) images are not supported; export the drawing as a {_FORMAT_LIST}."
        )
    return UnsupportedImage(f"The file is not a supported image; send a {_FORMAT_LIST} image.")


def _sniff_format(data: bytes) -> str | None:
    """The supported format whose signature starts `data`, if any (WebP: RIFF container of type WEBP)."""
    for name, signature in _SIGNATURES:
        if data.startswith(signature):
            return name
    return "WebP" if data.startswith(b"RIFF") and data[8:12] == b"WEBP" else None


def _request_reduced_decode(image: Image.Image) -> None:
    """Let a large JPEG decode straight at a reduced scale (1/2 to 1/8), which saves time and memory."""
    longer = max(image.size)
    if image.format in ("JPEG", "MPO") and longer > 2 * _WORK_SIDE:
        ratio = _WORK_SIDE / longer
        image.draft(image.mode, (max(1, round(image.width * ratio)), max(1, round(image.height * ratio))))


def _apply_orientation(image: Image.Image) -> None:
    """Rotate/flip the pixels upright as the EXIF orientation tag says."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # a broken EXIF block should not cost the user an upload whose pixels are fine
        return


# --- mode normalisation and transparency --------------------------------------------------------------------


def _normalise_mode(image: Image.Image) -> Image.Image:
    """Convert any mode to 'L', 'LA' (alpha kept for flattening) or 'F' (16/32-bit and float, in [0, 1])."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_unit(image)
    if mode in ("P", "PA") or (mode in ("1", "L", "RGB") and "transparency" in image.info):
        # The palette entries and the tRNS chunk hold the true colours and transparency.
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("LA", "La"):
        return image.convert("LA")
    if mode in ("RGBA", "RGBa"):
        return image.convert("RGBA").convert("LA")
    if mode in ("1", "L"):
        return image.convert("L")
    return image.convert("RGB").convert("L")  # CMYK, YCbCr, LAB, HSV, RGBX: through RGB, Pillow's proper path


def _high_depth_to_unit(image: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit or float image by its true range into an 'F' image in [0, 1] (never clipped)."""
    values = np.asarray(image, dtype=np.float32)
    if not np.isfinite(values).all():
        raise UnreadableImage("The image holds invalid (NaN or infinite) pixel values; re-export it.")
    low, high = float(values.min()), float(values.max())
    if image.mode.startswith("I;16"):
        full_scale = 65535.0
    elif image.mode == "F" and low >= 0 and high <= 1:
        full_scale = 1.0
    elif image.mode == "I" and low >= 0 and high <= 65535:
        full_scale = 255.0 if high <= 255 else 65535.0  # 8- or 16-bit data stored in 32 bits
    else:  # signed or unbounded data has no nominal white: use the range it actually spans
        values = values - low
        full_scale = max(high - low, 1e-12)
    return Image.fromarray(values / np.float32(full_scale))


def _shrink(image: Image.Image) -> Image.Image:
    """Area-average an image down to at most _WORK_SIDE on its longer side (alpha-weighted for 'LA')."""
    ratio = _WORK_SIDE / max(image.size)
    if ratio >= 1:
        return image
    size = (max(1, round(image.width * ratio)), max(1, round(image.height * ratio)))
    return image.resize(size, Image.Resampling.BOX)


def _to_arrays(image: Image.Image) -> tuple[FloatImage, FloatImage | None]:
    """Return grey levels (H, W) in [0, 1] and the alpha channel, or None when the image is fully opaque."""
    if image.mode == "F":
        return np.clip(np.asarray(image, dtype=np.float32), 0, 1), None
    values = np.asarray(image, dtype=np.float32) / np.float32(255)
    if image.mode == "L":
        return values, None
    gray, alpha = values[..., 0], values[..., 1]  # 'LA'
    return gray, (alpha if alpha.min() < 1 else None)


def _flatten_alpha(gray: FloatImage, alpha: FloatImage | None) -> FloatImage:
    """Composite onto the image's background so transparent pixels read as background, never as ink."""
    if alpha is None:
        return gray
    solid = gray[alpha >= 0.5]
    if solid.size == 0:  # nothing opaque: the flattened image is uniform and will be reported blank
        return np.ones_like(gray)
    dominant = float(np.median(solid))
    if np.mean(np.abs(solid - dominant) > 0.2) > 0.02:
        background = dominant  # the opaque part is a picture with its own background (transparent padding)
    else:  # the opaque part is strokes of one colour (a canvas export): black or white, whichever contrasts
        background = 1.0 if dominant < 0.5 else 0.0
    return (gray * alpha + np.float32(background) * (1 - alpha)).astype(np.float32)


# --- background levelling and polarity ----------------------------------------------------------------------


def _is_mnist_style(gray: FloatImage) -> bool:
    """True for a 28x28 image already in MNIST form (dark background), which passes through untouched."""
    if gray.shape != (IMAGE_SIDE, IMAGE_SIDE):
        return False
    return float(np.median(_border(gray))) <= 0.1


def _level(gray: FloatImage) -> FloatImage:
    """Subtract the smooth background, orient ink to white, drop the noise floor and stretch ink to peak 1."""
    residual = gray - _background_surface(gray)
    step = max(1, int(math.sqrt(residual.size / 65536)))  # a strided sample is plenty for a noise estimate
    noise = _paper_noise(residual[::step, ::step])
    floor = 3 * noise
    dark = np.clip(-residual - floor, 0, None).sum()
    bright = np.clip(residual - floor, 0, None).sum()
    ink = np.clip((-residual if dark > bright else residual) - floor, 0, None)  # light background: invert
    peak = float(_box3(ink).max())  # a 3x3 mean, so one hot pixel cannot pass for a digit
    if peak < max(_MIN_CONTRAST, 2 * noise):
        raise BlankImage("No digit could be found: the image has no ink that stands out from its background.")
    return np.clip(ink / np.float32(peak), 0, 1).astype(np.float32)


def _background_surface(gray: FloatImage) -> FloatImage:
    """Estimate the paper's brightness everywhere as a smooth surface robustly fitted to background pixels."""
    small = gray
    if max(gray.shape) > _FIT_SIDE:
        small = _resize(gray, _FIT_SIDE / max(gray.shape), Image.Resampling.BOX)
    quadratic = min(small.shape) >= 8  # a tiny image cannot support a curved fit beside its ink
    design = _design_matrix(*small.shape) if quadratic else np.ones((small.size, 1))
    values = small.ravel().astype(np.float64)
    fitted = np.full_like(values, np.median(_border(small)))  # start from the border: it is mostly paper
    coefficients = np.array([fitted[0]])
    for _ in range(4):  # sigma-clipped least squares: ink pixels drop out as the fit settles on the paper
        residual = values - fitted
        keep = np.abs(residual) <= 3 * _paper_noise(residual)
        if keep.sum() <= design.shape[1]:
            break
        kept = design[keep]  # normal equations: a 6x6 system, far cheaper than lstsq over every pixel
        coefficients = np.linalg.lstsq(kept.T @ kept, kept.T @ values[keep], rcond=None)[0]
        fitted = design @ coefficients
    if coefficients.size == 1:
        return np.full(gray.shape, float(coefficients[0]), dtype=np.float32)
    return _evaluate_quadratic(coefficients, *gray.shape)


def _unit_coordinates(count: int) -> NDArray[np.float64]:
    """Pixel centres of an axis of `count` pixels mapped to [-1, 1], so fits transfer between resolutions."""
    return (np.arange(count) + 0.5) / count * 2 - 1


def _design_matrix(height: int, width: int) -> NDArray[np.float64]:
    """(H * W, 6) terms 1, x, y, x^2, xy, y^2 of a quadratic surface, row-major like `ravel`."""
    y_grid, x_grid = np.meshgrid(_unit_coordinates(height), _unit_coordinates(width), indexing="ij")
    x, y = x_grid.ravel(), y_grid.ravel()
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)


def _evaluate_quadratic(coefficients: NDArray[np.float64], height: int, width: int) -> FloatImage:
    """The fitted surface at (H, W), evaluated separably: a(x) + y * b(x) + c * y^2."""
    x = _unit_coordinates(width)[None, :].astype(np.float32)  # (1, W)
    y = _unit_coordinates(height)[:, None].astype(np.float32)  # (H, 1)
    c0, c1, c2, c3, c4, c5 = coefficients.astype(np.float32)
    return (c0 + c1 * x + c3 * x * x) + y * (c2 + c4 * x) + c5 * y * y


def _paper_noise(residual: NDArray[np.floating]) -> float:
    """Robust noise of the paper around a background estimate, at least one grey level.

    Ink lies on one side of the background only, so the quieter side's median deviation (0.674 sigma for
    Gaussian noise) measures the paper even when ink covers most of the image.
    """
    upper, lower = residual[residual >= 0], -residual[residual <= 0]
    spreads = [float(np.median(side)) for side in (upper, lower) if side.size]
    return max(1.4826 * min(spreads), _MIN_NOISE)


def _box3(values: FloatImage) -> FloatImage:
    """3x3 mean filter with edge replication (separable, vectorised)."""
    padded = np.pad(values, 1, mode="edge")
    rows = padded[:-2] + padded[1:-1] + padded[2:]
    return (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) / np.float32(9)


def _border(values: FloatImage) -> FloatImage:
    """The outermost ring of pixels, flattened."""
    if min(values.shape) <= 2:
        return values.ravel()
    return np.concatenate([values[0], values[-1], values[1:-1, 0], values[1:-1, -1]])


# --- crop, resize and centre-of-mass paste ------------------------------------------------------------------


def _crop_to_ink(ink: FloatImage) -> FloatImage:
    """Crop to the bounding box of the ink, ignoring isolated specks that a 3x3 mean dilutes away."""
    mask = (ink > 0.1) & (_box3(ink) > 0.15)
    if not mask.any():  # only possible for a lone speck; keep whatever ink there is
        mask = ink > 0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _fit_box(crop: FloatImage) -> FloatImage:
    """Scale so the longer side is DIGIT_BOX px, keeping the aspect ratio (never 0 px), peak back at 1."""
    ratio = DIGIT_BOX / max(crop.shape)
    resample = Image.Resampling.BOX if ratio < 1 else Image.Resampling.BILINEAR
    digit = _resize(crop, ratio, resample)
    peak = float(digit.max())
    if peak <= 0:
        raise BlankImage("No digit could be found: the ink is too faint to read.")
    return digit / np.float32(peak)  # MNIST digits always reach full white


def _resize(values: FloatImage, ratio: float, resample: Image.Resampling) -> FloatImage:
    """Resize a float image by `ratio` with Pillow, each side rounded and at least 1 px."""
    height, width = values.shape
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    resized = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32)).resize(size, resample)
    return np.clip(np.asarray(resized, dtype=np.float32), 0, 1)


def _paste_centred(digit: FloatImage) -> FloatImage:
    """Paste into a black 28x28 canvas so the centre of mass sits at the centre (kept fully inside)."""
    height, width = digit.shape
    total = float(digit.sum())
    centre_y = float(digit.sum(axis=1) @ np.arange(height)) / total
    centre_x = float(digit.sum(axis=0) @ np.arange(width)) / total
    middle = (IMAGE_SIDE - 1) / 2
    top = min(max(math.floor(middle - centre_y + 0.5), 0), IMAGE_SIDE - height)
    left = min(max(math.floor(middle - centre_x + 0.5), 0), IMAGE_SIDE - width)
    canvas = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    canvas[top : top + height, left : left + width] = digit
    return canvas


def _quantise(values: FloatImage) -> FloatImage:
    """Round to 8-bit grey levels, so the model sees exactly what `to_png` of its input shows."""
    return (np.rint(np.clip(values, 0, 1) * 255) / 255).astype(np.float32)


def grey_levels(pixels: np.ndarray) -> NDArray[np.uint8]:
    """The 8-bit grey levels `to_png` stores for a (H, W) float-in-[0, 1] or uint8 array."""
    return _as_uint8(pixels)


def _as_uint8(pixels: np.ndarray) -> NDArray[np.uint8]:
    """Validate a (H, W) float-in-[0, 1] or uint8 array and return it as uint8 grey levels."""
    array = np.asarray(pixels)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"pixels must be a non-empty (H, W) array, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind != "f":
        raise TypeError(f"pixels must be float in [0, 1] or uint8, got {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError("pixels must be finite")
    # clip(x, 0, 1) * 255 == clip(x * 255, 0, 255) bit for bit; ufuncs with `out` instead of np.clip's
    # wrapper (a third of the time for a small image)
    levels = array * 255
    np.maximum(levels, 0, out=levels)
    np.minimum(levels, 255, out=levels)
    return np.rint(levels, out=levels).astype(np.uint8)
