"""RumexWeeds preparation: split lists + CVAT polygons -> ``processed/{split}/{images,masks}``.

For each split S and each non-blank line of ``dataset_splits/*random_S.txt`` (an image path relative
to the root), the image is copied to ``processed/S/images/`` and a label PNG of the image's size is
written to ``processed/S/masks/{stem}.png`` (0 background, 1 rumex_obtusifolius, 2 rumex_crispus).
The polygons come from ``annotations_seg.xml`` of the image's sequence (``<seq>/imgs/<file>`` ->
``<seq>/annotations_seg.xml``), taken from the ``<image>`` whose ``name`` is the file name, filled in
document order (a later polygon overwrites an earlier one). Labels match after stripping whitespace
and lower-casing; boxes, ellipses and other labels are ignored; coordinates are ``int(float(v))``.
An image with no ``<image>`` entry gets an all-background mask.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from clustvit.atomic import atomic_path
from clustvit.data.base import upright_size
from clustvit.data.prep_suim import Report, save_png_atomic

LABEL_IDS = {"rumex_obtusifolius": 1, "rumex_crispus": 2}
SPLITS = ("train", "val", "test")

Polygon = tuple[int, list[tuple[int, int]]]  # (label id, [(x, y), ...])


def parse_cvat_polygons(xml_path: Path) -> dict[str, list[Polygon]]:
    """Map image file name -> its rumex polygons in document order, from a CVAT 1.1 XML file."""
    result: dict[str, list[Polygon]] = {}
    for image in ET.parse(xml_path).getroot().iter("image"):
        polygons = []
        for poly in image.findall("polygon"):
            label_id = LABEL_IDS.get(poly.get("label", "").strip().lower())
            if label_id is None:
                continue
            points = []
            for pair in poly.get("points", "").split(";"):
                if pair.strip():
                    x, y = pair.split(",")
                    points.append((int(float(x)), int(float(y))))
            polygons.append((label_id, points))
        result[image.get("name", "")] = polygons
    return result


def render_mask(size: tuple[int, int], polygons: list[Polygon]) -> np.ndarray:
    """Fill ``polygons`` in order on a ``size = (w, h)`` background; returns ``(H, W)`` uint8 labels."""
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    for label_id, points in polygons:
        if points:
            draw.polygon(points, fill=label_id, outline=label_id)  # PIL clips to the canvas
    return np.asarray(canvas)


def _split_file(root: Path, split: str, report: Report) -> Path | None:
    found = sorted((root / "dataset_splits").glob(f"*random_{split}.txt"))
    if len(found) != 1:
        what = "none" if not found else ", ".join(p.name for p in found)
        report.errors.append(f"{root / 'dataset_splits'}: expected one *random_{split}.txt, found {what}")
        return None
    return found[0]


def prepare_rumexweeds(root: str | Path, progress: bool = True) -> Report:
    """Write ``processed/{train,val,test}``; see the module docstring."""
    root = Path(root)
    report = Report()
    jobs: list[tuple[str, Path]] = []
    for split in SPLITS:
        split_file = _split_file(root, split, report)
        if split_file is not None:
            lines = split_file.read_text().splitlines()
            jobs += [(split, root / line.strip()) for line in lines if line.strip()]
    annotations: dict[Path, dict[str, list[Polygon]] | None] = {}  # one parse per sequence
    for split, image_path in tqdm(jobs, desc="RumexWeeds", unit="img", disable=not progress):
        try:
            xml_path = image_path.parent.parent / "annotations_seg.xml"
            if xml_path not in annotations:
                annotations[xml_path] = parse_cvat_polygons(xml_path) if xml_path.is_file() else None
            polygons_by_name = annotations[xml_path]
            if polygons_by_name is None:
                raise FileNotFoundError(f"annotation file missing, expected {xml_path}")
            with Image.open(image_path) as im:
                im.load()  # decode fully: a truncated image is reported here, not at training time
                size = upright_size(im)  # the mask is drawn on the image as the dataset reads it
            out_dir = root / "processed" / split
            (out_dir / "images").mkdir(parents=True, exist_ok=True)
            (out_dir / "masks").mkdir(parents=True, exist_ok=True)
            mask = render_mask(size, polygons_by_name.get(image_path.name, []))
            save_png_atomic(mask, out_dir / "masks" / f"{image_path.stem}.png")
            with atomic_path(out_dir / "images" / image_path.name) as tmp:
                shutil.copyfile(image_path, tmp)
            report.converted += 1
        except (OSError, ValueError, SyntaxError, ET.ParseError) as e:
            report.errors.append(f"{image_path}: cannot prepare ({type(e).__name__}: {e})".replace("\n", " "))
    return report
