"""Image-decoding fixtures (tests/images/): lossy files and the pixels the reference's
loader, OpenCV's `imread`, decodes them to, which the command's reader must give bit for bit.

    python scripts/gen_image_fixtures.py   # needs numpy, Pillow (with WebP), opencv-python-headless

Each case is a seeded smooth pattern with noise, saved by Pillow (JPEG through libjpeg-turbo,
WebP through libwebp) and read back with `cv2.imread(path, cv2.IMREAD_COLOR)` as the
reference's data loader reads it; the RGB result is stored as `<name>_decoded.png`. And for the
JPEG degradation (the reference's JPEG datasets: `cv2.imencode(".jpg", bgr,
[cv2.IMWRITE_JPEG_QUALITY, q])`), an 8-bit input `opencv_encode_input.png` and OpenCV's files
of it at a few qualities, `opencv_encode_q<q>.jpg`, which our encoder must write byte for byte.
"""

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, features

OUT = Path(__file__).resolve().parent.parent / "tests" / "images"

# Qualities of the encoder fixtures: below 24 the baseline limit on the tables matters.
ENCODE_QUALITIES = [10, 50, 95]

# (file name, height, width, channels, Pillow save options)
CASES = [
    ("jpeg_420.jpg", 29, 37, 3, dict(quality=75)),
    ("jpeg_444_odd.jpg", 17, 33, 3, dict(quality=90, subsampling=0)),
    ("jpeg_422_progressive.jpg", 24, 41, 3, dict(quality=50, subsampling=1, progressive=True)),
    ("jpeg_gray.jpg", 19, 23, 1, dict(quality=80)),
    ("jpeg_cmyk.jpg", 21, 26, 4, dict(quality=85)),
    ("webp_lossy.webp", 29, 37, 3, dict(quality=80)),
    ("webp_lossy_alpha.webp", 23, 41, 4, dict(quality=10)),
]


def pattern(seed: int, height: int, width: int, channels: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    planes = [128 + 100 * np.sin(x / 7 + c) * np.cos(y / 5 - c) for c in range(channels)]
    noisy = np.stack(planes, -1) + rng.normal(0, 15, (height, width, channels))
    pixels = np.clip(noisy, 0, 255).astype(np.uint8)
    return pixels[..., 0] if channels == 1 else pixels


def image(pixels: np.ndarray, name: str) -> Image.Image:
    # Four channels are CMYK for a JPEG (Pillow writes Adobe's inverted samples), RGBA else.
    return Image.fromarray(pixels, "CMYK" if pixels.ndim == 3 and pixels.shape[2] == 4 and name.endswith(".jpg") else None)


def main() -> None:
    assert features.check("webp"), "Pillow without WebP"
    OUT.mkdir(parents=True, exist_ok=True)
    for seed, (name, height, width, channels, options) in enumerate(CASES):
        path = OUT / name
        image(pattern(seed, height, width, channels), name).save(path, **options)
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        Image.fromarray(np.ascontiguousarray(bgr[..., ::-1])).save(OUT / f"{path.stem}_decoded.png")
        print(f"{name}: {path.stat().st_size} bytes")
    rgb = pattern(len(CASES), 37, 53, 3)
    Image.fromarray(rgb).save(OUT / "opencv_encode_input.png")
    for quality in ENCODE_QUALITIES:
        ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        (OUT / f"opencv_encode_q{quality}.jpg").write_bytes(encoded.tobytes())
    print(f"OpenCV {cv2.__version__}, Pillow's libjpeg-turbo {features.version_feature('libjpeg_turbo')}")


if __name__ == "__main__":
    main()
