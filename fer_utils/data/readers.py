"""THE image reader (with truncation checks) of loaders and `predict`, and THE folder writer."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np

from ..faceset import SPLITS, DataError, FaceSet
from .reports import check_path

__all__ = ["IMAGE_EXTENSIONS", "read_image", "write_image_folder", "image_size_of"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".tif", ".tiff", ".webp",
                    ".gif", ".pgm", ".ppm", ".pbm", ".pnm")


class BadImage(Exception):
    """An image file that cannot be used; the message says why."""


def sniff(data: bytes) -> str | None:
    """The image format from the file's first bytes, or None when it is not an image."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if len(data) > 2 and data[:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
        return "PNM"
    return None


def check_complete(data: bytes, kind: str) -> None:
    """Raise BadImage when the file is cut short (decoders often fill the rest with grey)."""
    tail = data.rstrip(b"\x00\r\n\t ")
    if kind == "JPEG" and not tail.endswith(b"\xff\xd9"):
        raise BadImage("truncated JPEG (no end-of-image marker FFD9)")
    if kind == "PNG" and b"IEND" not in data[-64:]:
        raise BadImage("truncated PNG (no IEND chunk)")
    if kind == "GIF" and not tail.endswith(b";"):
        raise BadImage("truncated GIF (no trailer)")
    if kind == "WEBP" and int.from_bytes(data[4:8], "little") + 8 > len(data):
        raise BadImage("truncated WebP (shorter than its RIFF header says)")
    if kind == "BMP" and len(data) >= 6 and int.from_bytes(data[2:6], "little") > len(data):
        raise BadImage("truncated BMP (shorter than its header says)")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Any decoded dtype (uint16, float, bool, ...) → uint8 on the 0-255 scale."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    image = image.astype(np.float64)
    if np.nanmax(image) <= 1.0:
        image = image * 255.0
    return np.clip(np.nan_to_num(image), 0, 255).round().astype(np.uint8)


def to_grey_or_rgb(image: np.ndarray, channels: int) -> np.ndarray:
    """Convert an H×W[×C] uint8 RGB/grey image to `channels` (1 or 3), keeping H×W×C."""
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    return np.repeat(image, 3, axis=-1)


def _decode_pil(data: bytes) -> np.ndarray:
    """Decode with Pillow (fully, so truncation raises) into an RGB / RGBA / grey array."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.array(image).astype(np.uint16 if image.mode.startswith("I;16") else np.int32)
        modes = {"1": "L", "L": "L", "LA": "RGBA", "P": "RGBA", "RGBA": "RGBA"}
        return np.array(image.convert(modes.get(image.mode, "RGB")))


def _decode_cv2(data: bytes, kind: str) -> np.ndarray | None:
    """Decode with OpenCV, its log silenced (it warns on stderr about broken files)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        # JPEGs have no alpha but may carry an EXIF rotation, which IMREAD_UNCHANGED ignores.
        flags = (cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH) if kind == "JPEG" else \
            cv2.IMREAD_UNCHANGED
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        image = None
    finally:
        cv2.utils.logging.setLogLevel(level)
    return None if image is None or image.size == 0 else image


def _to_rgb_or_grey(image: np.ndarray, rgb_order: bool) -> np.ndarray:
    """A decoded uint8 image (grey, grey+alpha, BGR(A) or RGB(A)) → grey H×W or RGB H×W×3."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[2] == 2:  # grey + alpha
        image = np.dstack([image[..., 0]] * 3 + [image[..., 1]])
        rgb_order = True
    if image.ndim == 3 and image.shape[2] == 4:  # transparent pixels over white
        alpha = image[..., 3:4].astype(np.float32) / 255.0
        image = (image[..., :3] * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
    if image.ndim == 3 and not rgb_order:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim != 2 and not (image.ndim == 3 and image.shape[2] == 3):
        raise BadImage(f"unsupported image layout {image.shape}")
    if min(image.shape[:2]) < 1:
        raise BadImage("image has no pixels")
    return image


def decode(data: bytes, channels: int | None) -> np.ndarray:
    """Image bytes → uint8 H×W×channels (None: as stored, grey or RGB); raises BadImage."""
    if not data:
        raise BadImage("empty file")
    kind = sniff(data)
    if kind is None:
        raise BadImage("not an image (unrecognised content)")
    check_complete(data, kind)
    image, rgb_order = _decode_cv2(data, kind), False
    if image is None:
        try:
            image, rgb_order = _decode_pil(data), True
        except Exception as error:  # Pillow raises many types for broken files
            raise BadImage(f"unreadable {kind} ({type(error).__name__}: {error})") from None
    image = _to_rgb_or_grey(to_uint8(image), rgb_order)
    if channels is None:
        return image if image.ndim == 3 else image[..., None]
    return to_grey_or_rgb(image, channels)


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
