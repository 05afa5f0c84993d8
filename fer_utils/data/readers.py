"""THE image reader (Pillow: verified, decoded in full) of loaders and `predict`; the writer."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import cv2
import numpy as np

from ..faceset import SPLITS, DataError, FaceSet
from ..images import to_channels, to_uint8
from .reports import check_path

__all__ = ["IMAGE_EXTENSIONS", "read_image", "write_image_folder", "image_size_of"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".tif", ".tiff", ".webp",
                    ".gif", ".pgm", ".ppm", ".pbm", ".pnm")


class BadImage(Exception):
    """An image file that cannot be used; the message says why."""


def _open_complete(data: bytes):
    """Pillow's image of `data`, verified and fully loaded, and its format; raises BadImage.

    `Image.open` identifies the format, `verify()` checks what the format allows without
    decoding (PNG: every chunk's checksum and the end chunk), and `load()` decodes every pixel,
    so that a cut file raises instead of being filled with grey.
    """
    from PIL import Image, UnidentifiedImageError

    def opened():
        try:
            return Image.open(io.BytesIO(data))
        except Exception as error:  # UnidentifiedImageError, or a plugin's error on its header
            kind = image_format_of(data)
            if kind is None:
                raise BadImage("not an image (unrecognised content)") from None
            if isinstance(error, UnidentifiedImageError):
                raise BadImage(f"truncated or damaged {kind} (its header cannot be read)") \
                    from None
            raise BadImage(_damage(kind, error)) from None

    with opened() as probe:
        kind = probe.format or "image"
        try:
            probe.verify()
        except Exception as error:  # Pillow raises many types for broken files
            raise BadImage(_damage(kind, error)) from None
    image = opened()
    try:
        image.load()
    except Exception as error:
        image.close()
        raise BadImage(_damage(kind, error)) from None
    return image, kind


def image_format_of(data: bytes) -> str | None:
    """The format (of those the kit reads) whose signature `data` starts with, by Pillow's
    plugins, or None: it names the format of a file too damaged for `Image.open`."""
    from PIL import Image

    Image.init()
    registry = Image.registered_extensions()
    for kind in dict.fromkeys(registry[e] for e in IMAGE_EXTENSIONS if e in registry):
        accept = Image.OPEN.get(kind, (None, None))[1]
        try:
            if accept is not None and accept(data[:16]):
                return kind
        except Exception:  # a plugin's check that cannot judge these bytes
            continue
    return None


def _damage(kind: str, error: Exception) -> str:
    """Why Pillow refused a file, in one line: truncated, or otherwise unreadable."""
    text = " ".join(str(error).split())
    cut = isinstance(error, EOFError) or re.search(r"truncated|\bEOF\b", text, re.I) is not None
    return f"{'truncated' if cut else 'unreadable'} {kind} ({type(error).__name__}: {text})"


def _pixels(image) -> np.ndarray:
    """A loaded Pillow image, turned upright (EXIF), as grey, RGB, RGBA or 16/32-bit values."""
    from PIL import ImageOps

    ImageOps.exif_transpose(image, in_place=True)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F", "L", "RGB", "RGBA"):
        array = np.asarray(image)
        return array.astype(np.uint16) if image.mode.startswith("I;16") else array
    modes = {"1": "L", "LA": "RGBA", "La": "RGBA", "P": "RGBA", "PA": "RGBA"}
    return np.asarray(image.convert(modes.get(image.mode, "RGB")))


def _flatten_alpha(image: np.ndarray) -> np.ndarray:
    """A uint8 grey H×W or RGB(A) H×W×3|4 image → grey H×W or RGB H×W×3 (alpha on white)."""
    if image.ndim == 3 and image.shape[2] == 4:
        alpha = image[..., 3:4].astype(np.float32) / 255.0
        image = (image[..., :3] * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
    if image.ndim != 2 and not (image.ndim == 3 and image.shape[2] == 3):
        raise BadImage(f"unsupported image layout {image.shape}")
    if min(image.shape[:2]) < 1:
        raise BadImage("image has no pixels")
    return image


def decode(data: bytes, channels: int | None) -> np.ndarray:
    """Image bytes → uint8 H×W×channels (None: as stored, grey or RGB); raises BadImage."""
    if not data:
        raise BadImage("empty file")
    with warnings.catch_warnings():  # e.g. "Corrupt EXIF data": the file is judged below
        warnings.simplefilter("ignore")
        image, kind = _open_complete(data)
        with image:
            try:
                pixels = _pixels(image)
            except Exception as error:
                raise BadImage(_damage(kind, error)) from None
    image = _flatten_alpha(to_uint8(pixels))
    if channels is None:
        return image if image.ndim == 3 else image[..., None]
    return to_channels(image, channels)


def read_file(path, channels: int | None) -> np.ndarray:
    """`read_image` without the argument checks; raises BadImage or OSError."""
    return decode(Path(path).read_bytes(), channels)


def read_image(path, channels: int | None = 3) -> np.ndarray:
    """Read one image file (any common type, grey/RGB/RGBA, 8/16-bit) as uint8 H×W×channels.

    Every loader and `predict` read pictures through this function. Transparent pixels are
    composited over white; a JPEG's EXIF rotation is applied.

    Args:
        path: the image file.
        channels: 3 (RGB), 1 (grey) or None (as stored: 1 for grey files, 3 for colour).

    Returns:
        uint8 H×W×channels array.

    Raises:
        FileNotFoundError: the file does not exist.
        DataError: naming the file and the reason: a folder, an empty file, not an image,
            a truncated JPEG/PNG/GIF/WebP/BMP, or an undecodable one.
    """
    if channels not in (1, 3, None):
        raise ValueError(f"read_image: channels must be 1 (grey), 3 (RGB) or None (as stored), "
                         f"got {channels!r}")
    path = check_path(path, "image")
    try:
        return read_file(path, channels)
    except BadImage as error:
        raise DataError(f"{path}: {error}") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None


def is_colour(image: np.ndarray, tolerance: int = 2) -> bool:
    """True when an RGB image's channels differ (a grey picture saved as RGB is not colour)."""
    if image.ndim != 3 or image.shape[-1] != 3:
        return False
    pixels = image.reshape(-1, 3).astype(np.int16)
    return bool(np.abs(pixels - pixels[:, :1]).max() > tolerance)


def image_size_of(path) -> tuple[int, int] | None:
    """(height, width) from the file's header without decoding the pixels; None if unknown."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return int(height), int(width)


def fit_image(image: np.ndarray, size: int, fit: str = "crop"):
    """Fit an H×W×C image to size×size; return it and (scale_x, scale_y, off_x, off_y) so that
    a point (x, y) of the original lands at ((x - off_x) * scale_x, (y - off_y) * scale_y)."""
    h, w = image.shape[:2]
    off_x = off_y = 0
    if fit == "crop" and h != w:
        side = min(h, w)
        off_x, off_y = (w - side) // 2, (h - side) // 2
        image = image[off_y:off_y + side, off_x:off_x + side]
        h = w = side
    if (h, w) != (size, size):
        interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
        image = cv2.resize(image, (size, size), interpolation=interp).reshape(
            size, size, image.shape[-1])
    return image, (size / w, size / h, off_x, off_y)


def write_image_folder(fs: FaceSet, path, ext: str = "png", by_split: bool = False) -> Path:
    """Write a FaceSet as image files, one sub-folder per class, the layout `load_image_folder`
    reads back.

    Args:
        fs: the faces.
        path: the destination folder (created).
        ext: image format by extension ("png" keeps the pixels exactly).
        by_split: write split folders `path/<split>/<class>/<index>.<ext>` (every class folder
            in every split; needs `fs.split`), which load back with their split; default:
            class folders `path/<class>/<index>.<ext>`.

    Returns:
        The folder written.
    """
    root = Path(path).expanduser()
    ext = ext.lower().lstrip(".")
    if f".{ext}" not in IMAGE_EXTENSIONS:
        raise ValueError(f"write_image_folder: ext={ext!r} is not one of "
                         f"{', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)}")
    if root.exists() and not root.is_dir():
        raise DataError(f"write_image_folder: {root} is a file, not a folder")
    if by_split and fs.split is None:
        raise ValueError("write_image_folder: by_split=True needs a FaceSet with `split`")
    splits = [s for s in SPLITS if s in set(fs.split)] + sorted(set(fs.split) - set(SPLITS)) \
        if by_split else [""]
    for part in splits:
        for name in fs.class_names:
            (root / part / name).mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(len(fs))))
    for i, (image, label) in enumerate(zip(fs.images, fs.labels)):
        out = image[..., 0] if image.shape[-1] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        part = fs.split[i] if by_split else ""
        file = root / part / fs.class_names[label] / f"{i:0{width}d}.{ext}"
        if not cv2.imwrite(str(file), out):
            raise OSError(f"write_image_folder: OpenCV could not write {file}")
    return root
