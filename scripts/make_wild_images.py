#!/usr/bin/env python3
"""Small images "from the wild" for rekindle's decoding tests (train/tests/wild.rs,
infer/tests/wild.rs), written with Pillow, which can make what the `image` crate cannot encode:
CMYK and progressive JPEGs, EXIF orientations, palette PNGs, headers declaring huge images.

Usage: $REKINDLE_PYTHON scripts/make_wild_images.py [OUT_DIR]   (default train/tests/data/wild)

Writes, every file a few hundred bytes to a few KB (committed, so the tests need no Python):
  exif-N.jpg, N = 1..8   the same 4:4:4 JPEG data (a 24x16 picture of 8x8 cells in six
                         distinct colours), tagged with EXIF orientation N
  png-exif-6.png         the picture as a PNG with an eXIf chunk saying orientation 6, and its .want.png
  exif-N.want.png        what PIL gives for exif-N.jpg: ImageOps.exif_transpose(...).convert("RGB")
  cmyk.jpg, progressive.jpg, and their .want.png (PIL's convert("RGB"))
  ycck.jpg               cmyk.jpg's data with the Adobe segment saying YCCK, and its .want.png
  palette.png, palette-trns.png   mode P, without and with a tRNS chunk, and their .want.png
  huge.png               a valid PNG declaring 100000x100000 (IHDR) with one row of pixel data
  huge.jpg               exif-1.jpg with its frame header (SOF) patched to declare 60000x50000

Deterministic: the same Pillow version writes the same bytes.
"""
import struct
import sys
import zlib
from pathlib import Path

from PIL import Image, ImageOps

COLOURS = [(230, 25, 25), (25, 200, 40), (30, 40, 220), (240, 220, 30), (20, 210, 220), (250, 250, 250)]


def picture() -> Image.Image:
    """3 x 2 cells of 8x8 pixels, each its own colour: every rotation and flip looks different."""
    im = Image.new("RGB", (24, 16))
    for i, c in enumerate(COLOURS):
        x, y = (i % 3) * 8, (i // 3) * 8
        im.paste(c, (x, y, x + 8, y + 8))
    return im


def exif(orientation: int) -> bytes:
    e = Image.Exif()
    e[0x0112] = orientation
    return e.tobytes()


def want(path: Path) -> None:
    """PIL's reading of `path`, orientation applied, as an RGB PNG."""
    with Image.open(path) as im:
        ImageOps.exif_transpose(im).convert("RGB").save(path.with_name(path.stem + ".want.png"))


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "train/tests/data/wild")
    out.mkdir(parents=True, exist_ok=True)
    pic = picture()
    for n in range(1, 9):
        p = out / f"exif-{n}.jpg"
        pic.save(p, quality=95, subsampling=0, exif=exif(n))
        want(p)
    p = out / "png-exif-6.png"
    pic.save(p, exif=exif(6))
    want(p)
    p = out / "cmyk.jpg"
    pic.convert("CMYK").save(p, quality=95, subsampling=0)
    want(p)
    # The same JPEG data read as YCCK: Pillow cannot write YCCK, but the Adobe APP14 segment's
    # last byte (colour transform: 0 CMYK, 2 YCCK) decides how every decoder reads the channels.
    ycck = bytearray(p.read_bytes())
    app14 = ycck.index(b"\xff\xee")  # marker, length, "Adobe", version, 2 flags, transform
    assert ycck[app14 + 4 : app14 + 9] == b"Adobe"
    ycck[app14 + 4 + 11] = 2
    p = out / "ycck.jpg"
    p.write_bytes(bytes(ycck))
    want(p)
    p = out / "progressive.jpg"
    pic.save(p, quality=95, progressive=True)
    want(p)
    pal = pic.quantize(colors=len(COLOURS))
    pal.save(out / "palette.png")
    want(out / "palette.png")
    pal.save(out / "palette-trns.png", transparency=0)
    want(out / "palette-trns.png")
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    # The first row of zeros: a decoder reads the header up to the first IDAT chunk.
    idat = zlib.compress(bytes(1 + 3 * 100_000), 9)
    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    (out / "huge.png").write_bytes(head + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    jpeg = bytearray((out / "exif-1.jpg").read_bytes())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 50_000, 60_000)  # height, then width
    (out / "huge.jpg").write_bytes(bytes(jpeg))


if __name__ == "__main__":
    main()
