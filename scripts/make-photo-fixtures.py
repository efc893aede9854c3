#!/usr/bin/env python3
"""Write the photo files the inbox tests read (firmware/testdata/photos/, issue 31 item 5): the formats a user's
camera or phone produces, made with Pillow (pip install pillow). Each picture is a 40 x 30 dark field with a bright
10 x 10 block in its top-left corner, as the viewer should see it (after the EXIF orientation), so a test can check
where the block lands. Run once; the files are checked in.

    python3 scripts/make-photo-fixtures.py
"""
import io
from pathlib import Path

from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "firmware" / "testdata" / "photos"
W, H = 40, 30


def picture(mode="L"):
    img = Image.new("L", (W, H), 20)
    img.paste(230, (0, 0, 10, 10))
    return img.convert(mode)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    # Grey + alpha: the right half fully transparent over white, which must composite to the background.
    la = picture("L").convert("LA")
    px = la.load()
    for y in range(H):
        for x in range(W // 2, W):
            px[x, y] = (255, 0)
    la.save(OUT / "grey-alpha.png")
    picture("RGB").quantize(16).save(OUT / "palette.png")
    picture("L").convert("I;16").point(lambda v: v * 257).save(OUT / "grey16.png")
    Image.merge("RGB", [picture("L")] * 3).convert("CMYK").save(OUT / "cmyk.jpg", quality=95)
    picture("RGB").save(OUT / "progressive.jpg", quality=95, progressive=True)
    # EXIF orientation 6 ("rotate 90° clockwise to view"): the stored pixels are the picture turned 90°
    # counter-clockwise.
    exif = Image.Exif()
    exif[0x0112] = 6
    picture("RGB").transpose(Image.Transpose.ROTATE_90).save(OUT / "exif-rotated.jpg", quality=95, exif=exif)
    Image.new("L", (1, 1), 200).save(OUT / "one-pixel.png")
    Image.new("L", (20000, 20000), 0).save(OUT / "huge-20000.png", optimize=True)
    buf = io.BytesIO()
    picture("RGB").save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    (OUT / "truncated.jpg").write_bytes(data[: len(data) * 6 // 10])
    (OUT / "empty.jpg").write_bytes(b"")
    (OUT / "not-an-image.jpg").write_bytes(b"holiday notes, not a photo\n")
    buf = io.BytesIO()
    picture("L").save(buf, "PNG")
    (OUT / "png-named.jpg").write_bytes(buf.getvalue())


if __name__ == "__main__":
    main()
