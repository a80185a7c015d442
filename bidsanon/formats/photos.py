"""Photos of the participant (``*_photo.jpg|png|tif``): excluded, or kept stripped.

BIDS MEG/EEG datasets may hold photos of the head taken to document electrode or
coil placement; they often show the face. The default policy leaves them out. With
``keep_stripped`` the picture is rebuilt from its pixels only, so EXIF (camera,
times, GPS), XMP, IPTC, ICC profiles, comments and text chunks are all gone; that
needs a re-encode (JPEG at quality 95; PNG and TIFF are lossless). :data:`FIELDS` is
the one table of what is identifying; the rewriter, :func:`check_file` and
``docs/formats.md`` read it.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import TYPE_CHECKING

from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import write_bytes_atomic
from bidsanon.records import Change, FileResult, Finding, markdown_table, PartField
from bidsanon.schema import Key

if TYPE_CHECKING:  # Pillow is loaded when a photo is processed, not on import
    from PIL import Image

FORMAT = "photo"

POLICY = {
    "action": Key(
        "exclude",
        "Photos of the participant (`*_photo.jpg|png|tif`), which often show the face: "
        "`exclude` leaves them out of the output; `keep_stripped` keeps them with every "
        "metadata block removed (the face stays visible).",
        choices=("exclude", "keep_stripped")),
    "jpeg_quality": Key(95, "JPEG quality of re-encoded photos (`keep_stripped`).",
                        type=int, min=50, max=100),
}


Field = PartField


#: The one table of identifying parts of a photo.
FIELDS: tuple[Field, ...] = (
    Field("the picture", "pixels (often the face)", "left out unless `action: keep_stripped`",
          "photos.face"),
    Field("EXIF", "JPEG APP1 `Exif`, PNG `eXIf`, TIFF EXIF/GPS IFDs (camera, serial, "
          "times, GPS)", "removed", "photos.metadata"),
    Field("XMP", "JPEG APP1 XMP, PNG `iTXt` XML, TIFF tag 700", "removed", "photos.metadata"),
    Field("IPTC / Photoshop", "JPEG APP13, TIFF tag 33723", "removed", "photos.metadata"),
    Field("ICC profile", "JPEG APP2, PNG `iCCP`, TIFF tag 34675 (names the device)",
          "removed", "photos.metadata"),
    Field("comments and text", "JPEG COM, PNG `tEXt`/`zTXt`/`iTXt`/`tIME`, TIFF "
          "description, make, model, software, date, artist, host, copyright",
          "removed", "photos.metadata"),
    Field("EXIF orientation", "EXIF tag 274", "applied to the pixels, then removed",
          "photos.metadata"),
)

#: Image.info keys that carry no identifying content.
_HARMLESS_INFO = {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi",
                  "progressive", "progression", "transparency", "gamma", "aspect",
                  "compression", "interlace", "resolution", "srgb", "chromaticity",
                  "loop", "duration", "background", "adobe", "adobe_transform"}
_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF"}


def settings(policy: dict | None) -> dict:
    """The ``files.photos`` section of a whole policy with defaults filled in."""
    from bidsanon.formats import settings as format_settings
    return format_settings(FORMAT, policy)


def include(rel: str, policy: dict) -> bool:
    """Whether photos are written to the output at all (the planner asks first)."""
    return settings(policy)["action"] != "exclude"


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image; InputError if it is not what its name says."""
    from PIL import Image, UnidentifiedImageError
    expected = _FORMATS.get(path.suffix.lower())
    try:
        img = Image.open(path)
        img.load()
    except UnidentifiedImageError:
        raise InputError(f"not an image Pillow can read (expected {expected or 'an image'})",
                         path) from None
    except (OSError, SyntaxError) as exc:
        raise InputError(f"corrupt or truncated image: {exc}", path) from None
    if expected and img.format != expected:
        raise InputError(f"the file is {img.format}, not {expected} as its extension says",
                         path)
    return img


def metadata(img: Image.Image) -> list[str]:
    """Names of the metadata blocks an opened image carries."""
    found = [k for k in img.info if k not in _HARMLESS_INFO]
    for marker, data in getattr(img, "applist", []):
        if marker != "APP0" and marker != "APP14":
            found.append(f"{marker} {data[:4]!r}")
    if getattr(img, "text", None):
        found.append("text chunks")
    if img.format == "TIFF":
        tags = set(img.tag_v2.keys())
        identifying = {270, 271, 272, 305, 306, 315, 316, 700, 33432, 33723, 34665,
                       34675, 34853}
        found += [f"TIFF tag {t}" for t in sorted(tags & identifying)]
    elif img.getexif():
        found.append("EXIF")
    return sorted(set(found))


def strip(img: Image.Image) -> Image.Image:
    """A new image from the pixels only (EXIF orientation applied first)."""
    from PIL import Image, ImageOps
    img = ImageOps.exif_transpose(img)
    clean = Image.frombytes(img.mode, img.size, img.tobytes())
    if img.mode == "P":
        clean.putpalette(img.getpalette())
        if "transparency" in img.info:
            clean.info["transparency"] = img.info["transparency"]
    return clean


def encode(img: Image.Image, fmt: str, quality: int) -> bytes:
    """Encode ``img`` with no metadata at all."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        if img.mode not in ("RGB", "L", "CMYK"):
            img = img.convert("RGB")
        img.save(buf, "JPEG", quality=quality, optimize=False)
    elif fmt == "PNG":
        extra = {"transparency": img.info["transparency"]} if "transparency" in img.info else {}
        img.save(buf, "PNG", **extra)
    else:
        img.save(buf, "TIFF", compression="tiff_lzw")
    return buf.getvalue()


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Write ``src`` to ``dst`` rebuilt from its pixels (policy ``keep_stripped``)."""
    src, dst = Path(src), Path(dst)
    policy = settings(ctx.policy)
    img = open_image(src)
    found = metadata(img)
    fmt = img.format
    data = encode(strip(img), fmt, policy["jpeg_quality"])
    write_bytes_atomic(dst, data)
    changes = [Change("metadata", "remove", block) for block in found]
    changes.append(Change("pixels", "replace", f"re-encoded as {fmt}"))
    return FileResult(changes=changes,
                      warnings=["photo of the participant kept (it may show the face)"])


def peek_dates(path: Path) -> list[dt.datetime]:
    """Photos carry no date the output keeps (EXIF times are removed, not shifted)."""
    return []


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """A finding for the photo itself and one for any metadata it still carries."""
    path = Path(path)
    face = next(f for f in FIELDS if f.rule == "photos.face")
    out = [Finding(rel, face.rule, "warning", "photo of the participant (may show the "
                   "face)", face.where)]
    try:
        img = open_image(path)
    except InputError as exc:
        return out + [Finding(rel, "photos.unreadable", "error", exc.message)]
    found = metadata(img)
    if found:
        out.append(Finding(rel, "photos.metadata", "error",
                           "metadata present: " + ", ".join(found)))
    return out


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` that ``docs/formats.md`` includes."""
    return markdown_table(["part", "where", "what is done", "check rule"],
                          [[f.name, f.where, f.action, f"`{f.rule}`"] for f in FIELDS])


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """Pillow opens the output with the input's size (pixels are re-encoded)."""
    from bidsanon.verify import VerificationError
    a, b = open_image(Path(src)), open_image(Path(dst))
    if a.size != b.size:
        raise VerificationError(f"image size {b.size} differs from the input's {a.size}", dst)
    return {"reader": "PIL", "checked": ["size"]}
