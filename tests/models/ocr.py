"""OCR data with ground truth, made here: text rendered with Debian's fonts.

Pages (text detection), line crops (recognition) and line crops turned upside down or not
(direction classification) come with what was drawn: the box of every line, its text,
its orientation. The pre- and post-processing follow PP-OCR's (rapidocr's config.yaml):
BGR input scaled to [-1, 1]; DB detection thresholds 0.3 / 0.5, unclip ratio 1.6; CTC
greedy decoding over the character list stored in the recognition model's metadata.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

FONT_DIRS = (Path("/usr/share/fonts/truetype"),)
FONT_FILES = (  # Debian: fonts-dejavu-core, fonts-liberation2, fonts-noto-mono
    "DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
    "LiberationSans-Regular.ttf", "LiberationSerif-Regular.ttf", "LiberationMono-Regular.ttf",
    "NotoMono-Regular.ttf",
)  # fmt: skip
WORDS = (
    "line", "station", "batch", "order", "part", "valve", "motor", "sensor", "shelf", "aisle",
    "lot", "pallet", "camera", "belt", "gate", "dock", "zone", "check", "serial", "label",
    "Packed", "Shipped", "Model", "Route", "Cell", "Unit", "Tray", "Bin", "Lane", "Rack",
    "EXIT", "STOP", "OPEN", "DANGER", "PASS", "FAIL", "TOTAL", "WEIGHT", "SPEED", "LIMIT",
)  # fmt: skip
PAGE = (256, 512)  # height, width: multiples of 32, as the DB network needs
REC_SHAPE = (48, 320)
CLS_SHAPE = (48, 192)
DET_THRESH, BOX_THRESH, UNCLIP = 0.3, 0.5, 1.6


@cache
def fonts() -> tuple[Path, ...]:
    found = []
    for name in FONT_FILES:
        hits = [p for d in FONT_DIRS for p in d.rglob(name)]
        if hits:
            found.append(hits[0])
    if len(found) < 3:
        raise RuntimeError(
            "OCR data needs Debian's fonts (fonts-dejavu-core, fonts-liberation2, "
            "fonts-noto-mono); run hack/install-deps.sh"
        )
    return tuple(found)


def _phrase(rng: random.Random, words: int) -> str:
    parts = [rng.choice(WORDS) for _ in range(words)]
    if rng.random() < 0.6:
        parts.insert(rng.randrange(len(parts) + 1), str(rng.randrange(10, 99999)))
    return " ".join(parts)


def _bgr_input(image: Image.Image) -> npt.NDArray[np.float32]:
    """HxWx3 RGB image -> 3xHxW BGR float in [-1, 1]."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    return np.ascontiguousarray(((rgb[:, :, ::-1] / 255.0 - 0.5) / 0.5).transpose(2, 0, 1))


def _background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    h, w = size
    shade = rng.randrange(200, 256)
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, 6, (h, w, 1))
    tint = np.array([rng.randrange(-12, 12) for _ in range(3)])
    pixels = np.clip(shade + noise + tint, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


# --- detection ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    x: npt.NDArray[np.float32]  # [3, H, W]
    boxes: tuple[tuple[int, int, int, int], ...]  # x0, y0, x1, y1 of each line's ink
    texts: tuple[str, ...]


def make_pages(count: int, seed: int = 0) -> list[Page]:
    rng = random.Random(seed)
    pages = []
    for _ in range(count):
        image = _background(rng, PAGE)
        draw = ImageDraw.Draw(image)
        boxes, texts, y = [], [], rng.randrange(8, 24)
        while True:
            font = ImageFont.truetype(str(rng.choice(fonts())), rng.randrange(18, 30))
            text = _phrase(rng, rng.randrange(1, 4))
            x = rng.randrange(8, 120)
            box = draw.textbbox((x, y), text, font=font)
            if box[3] > PAGE[0] - 8:
                break
            if box[2] < PAGE[1] - 8:
                ink = tuple(rng.randrange(0, 90) for _ in range(3))
                draw.text((x, y), text, font=font, fill=ink)
                boxes.append(box)
                texts.append(text)
            y = box[3] + rng.randrange(14, 40)
        pages.append(Page(_bgr_input(image), tuple(boxes), tuple(texts)))
    return pages


def boxes_from_map(prob: npt.NDArray[Any]) -> list[tuple[float, float, float, float]]:
    """DB post-processing for horizontal text: threshold, dilate, components, unclip."""
    prob = np.asarray(prob, dtype=np.float32).reshape(prob.shape[-2:])
    mask = ndimage.binary_dilation(prob > DET_THRESH, structure=np.ones((2, 2), bool))
    labels, _ = ndimage.label(mask)
    boxes = []
    for index, where in enumerate(ndimage.find_objects(labels), start=1):
        if where is None:
            continue
        ys, xs = where
        w, h = xs.stop - xs.start, ys.stop - ys.start
        if min(w, h) < 3 or prob[where][labels[where] == index].mean() < BOX_THRESH:
            continue
        d = w * h * UNCLIP / (2 * (w + h))  # DB's unclip distance for a rectangle
        boxes.append((xs.start - d, ys.start - d, xs.stop + d, ys.stop + d))
    return boxes


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(
    truth: Sequence[Sequence[float]], found: Sequence[Sequence[float]], iou: float = 0.5
) -> int:
    """Greedy one-to-one matches at IoU >= `iou`."""
    pairs = sorted(
        ((_iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)),
        reverse=True,
    )
    used_t: set[int] = set()
    used_f: set[int] = set()
    for score, i, j in pairs:
        if score < iou:
            break
        if i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
    return len(used_t)


def detection_scores(pages: Sequence[Page], maps: Sequence[npt.NDArray[Any]]) -> dict[str, float]:
    truth = found = matched = 0
    for page, prob in zip(pages, maps, strict=True):
        boxes = boxes_from_map(prob)
        truth += len(page.boxes)
        found += len(boxes)
        matched += match_boxes(page.boxes, boxes)
    recall = matched / truth if truth else 0.0
    precision = matched / found if found else 0.0
    f1 = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    return {"recall": recall, "precision": precision, "f1": f1, "lines": float(truth)}


# --- recognition and direction ------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    x: npt.NDArray[np.float32]  # [3, 48, W]
    text: str
    flipped: bool


def _line_image(rng: random.Random, text: str) -> Image.Image:
    font = ImageFont.truetype(str(rng.choice(fonts())), rng.randrange(26, 40))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=font)
    pad = rng.randrange(3, 9)
    image = _background(rng, (y1 - y0 + 2 * pad, x1 - x0 + 2 * pad))
    ink = tuple(rng.randrange(0, 90) for _ in range(3))
    ImageDraw.Draw(image).text((pad - x0, pad - y0), text, font=font, fill=ink)
    return image


def _fit(image: Image.Image, shape: tuple[int, int]) -> npt.NDArray[np.float32]:
    """Resize to the height, keep the aspect ratio up to the width, pad with zeros (rapidocr)."""
    height, width = shape
    w = min(width, math.ceil(height * image.width / image.height))
    resized = _bgr_input(image.resize((w, height), Image.Resampling.BILINEAR))
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :w] = resized
    return out


def make_lines(count: int, seed: int = 0, shape: tuple[int, int] = REC_SHAPE) -> list[Line]:
    """Line crops; every other one is turned by 180 degrees when `shape` is CLS_SHAPE."""
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        text = _phrase(rng, rng.randrange(1, 3))
        image = _line_image(rng, text)
        flipped = shape == CLS_SHAPE and i % 2 == 1
        if flipped:
            image = image.rotate(180)
        lines.append(Line(_fit(image, shape), text, flipped))
    return lines


def characters(rec_model: Path) -> list[str]:
    """CTC classes of the recognition model: blank, its dictionary, then a space."""
    meta = ort.InferenceSession(str(rec_model), providers=["CPUExecutionProvider"])
    chars = meta.get_modelmeta().custom_metadata_map["character"].splitlines()
    return ["", *chars, " "]


def ctc_decode(probs: npt.NDArray[Any], chars: Sequence[str]) -> str:
    best = np.asarray(probs).reshape(-1, probs.shape[-1]).argmax(axis=1)
    out, last = [], -1
    for k in best:
        if k != last and k != 0:
            out.append(chars[k])
        last = int(k)
    return "".join(out)


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def character_error_rate(texts: Sequence[str], decoded: Sequence[str]) -> float:
    errors = sum(edit_distance(t, d) for t, d in zip(texts, decoded, strict=True))
    return errors / max(1, sum(len(t) for t in texts))
