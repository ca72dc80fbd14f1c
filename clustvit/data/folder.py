"""Your own data: a folder of images and masks, in the layouts labelling tools write.

Layouts (``layout="auto"`` takes the first that fits):

* ``voc`` - Pascal VOC and CVAT's "Segmentation mask" export: ``JPEGImages/``, ``SegmentationClass/``
  (colour PNGs, or palette PNGs whose indices are the classes), ``labelmap.txt`` (``name:r,g,b::`` lines,
  the class names and colours in order), ``ImageSets/Segmentation/{train,val,test}.txt`` (or only
  ``default.txt``, as CVAT writes it).
* ``split_dirs`` - ``{train,val,test}/images/`` beside ``{train,val,test}/masks/`` (or ``labels/``).
* ``flat`` - ``images/`` beside ``masks/`` (or ``labels/``), with split lists
  ``splits/{train,val,test}.txt`` (or the same files at the top) when there are any.

Index masks are 8- or 16-bit single-channel PNGs whose value is the class; class names come from the
``classes`` argument, else ``labelmap.txt``, else ``classes.txt`` (one name per line). A split that has no
list or folder is made from the others by a seeded fraction: ``val`` takes ``val_fraction`` of ``train``
(when there is no val), and ``test`` is ``val`` (when there is no test). Every problem is one line naming
the file and what was expected (``DatasetError``); ``clustvit data check`` lists them all at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from clustvit.data.base import IMAGE_SUFFIXES, DatasetError, FilePairDataset, Pipeline
from clustvit.data.transforms import IGNORE_INDEX
from clustvit.viz.draw import distinct_colours

LAYOUTS = ("voc", "split_dirs", "flat")
SPLITS = ("train", "val", "test")
MASK_DIRS = ("masks", "labels", "SegmentationClass")
VOC_VOID = (224, 224, 192)  # VOC's boundary colour: ignored unless the palette names it


@dataclass
class FolderScan:
    """What a folder holds: its layout, the (image, mask) pairs of every split, the classes, problems."""

    root: Path
    layout: str
    splits: dict[str, list[tuple[Path, Path]]]
    classes: tuple[str, ...]
    palette: list[tuple[int, int, int]] | None  # colours of colour masks, in class order (labelmap.txt)
    split_source: dict[str, str] = field(default_factory=dict)  # split -> where it came from
    problems: list[str] = field(default_factory=list)  # one line each: images without masks, ...


def read_labelmap(path: Path) -> tuple[tuple[str, ...], list[tuple[int, int, int]]]:
    """CVAT / VOC ``labelmap.txt``: ``name:r,g,b:parts:actions`` per line, ``#`` comments."""
    names, colours = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        rgb = rest.split(":", 1)[0].split(",")
        try:
            colour = tuple(int(v) for v in rgb)
        except ValueError:
            colour = ()
        if len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
            raise DatasetError(f"{path}:{n}: expected 'name:r,g,b::', got {line.strip()!r}")
        names.append(name.strip())
        colours.append(colour)
    if not names:
        raise DatasetError(f"{path}: no classes, expected 'name:r,g,b::' lines")
    if len(set(colours)) != len(colours):
        raise DatasetError(f"{path}: two classes share a colour, expected one colour per class")
    return tuple(names), colours


def read_classes(path: Path) -> tuple[str, ...]:
    """``classes.txt``: one class name per line, in class-id order (blank lines and ``#`` comments skipped)."""
    names = tuple(s.strip() for s in path.read_text().splitlines() if s.strip() and not s.lstrip().startswith("#"))
    if not names:
        raise DatasetError(f"{path}: no class names, expected one name per line")
    return names


def detect_layout(root: Path) -> str:
    """The first layout of ``LAYOUTS`` whose folders exist under ``root``."""
    if (root / "SegmentationClass").is_dir():
        return "voc"
    if any((root / s / "images").is_dir() for s in SPLITS):
        return "split_dirs"
    if (root / "images").is_dir():
        return "flat"
    raise DatasetError(f"{root}: no dataset layout found, expected SegmentationClass/ + JPEGImages/ (VOC, "
                       "CVAT), train/images/ + train/masks/, or images/ + masks/")


def _images_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: image folder not found")
    found = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}
    if not found:
        raise DatasetError(f"{folder}: empty image folder, expected {'/'.join(IMAGE_SUFFIXES)} files")
    return found


def _mask_dir(base: Path) -> Path:
    return next((base / d for d in MASK_DIRS if (base / d).is_dir()), base / "masks")


def _pairs(stems: list[str], images: dict[str, Path], mask_dir: Path, where: str,
           problems: list[str]) -> list[tuple[Path, Path]]:
    """(image, mask) of each stem; a stem without an image or a mask becomes a problem line instead."""
    pairs = []
    image_dir = next(iter(images.values())).parent  # _images_by_stem never returns an empty folder
    for stem in stems:
        image, mask = images.get(stem), mask_dir / f"{stem}.png"
        if image is None:
            problems.append(f"{where}: names {stem!r}, expected an image {stem}.jpg/.png in {image_dir}")
        elif not mask.is_file():
            problems.append(f"{image}: mask missing, expected {mask}")
        else:
            pairs.append((image, mask))
    return pairs


def _read_list(path: Path) -> list[str]:
    """A split list: one image name per line (a stem, or a file name whose suffix is dropped)."""
    return [Path(s.split()[0]).stem for s in path.read_text().splitlines() if s.strip()]


def _fraction_split(stems: list[str], fraction: float, seed: int, where: str) -> tuple[list[str], list[str]]:
    """(rest, held out): a seeded permutation of the sorted names, ``fraction`` of them held out."""
    if not 0.0 < fraction < 1.0 or len(stems) < 2:
        raise DatasetError(f"{where}: cannot hold out val_fraction={fraction} of {len(stems)} images, expected "
                           ">= 2 images and 0 < val_fraction < 1 (or give a val split)")
    names = sorted(stems)
    order = np.random.default_rng(seed).permutation(len(names))
    n_out = min(max(1, round(len(names) * fraction)), len(names) - 1)
    return sorted(names[i] for i in order[n_out:]), sorted(names[i] for i in order[:n_out])


def scan_folder(
    root: str | Path,
    layout: str = "auto",
    classes: tuple[str, ...] | list[str] | None = None,
    palette: list[tuple[int, int, int]] | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
) -> FolderScan:
    """Find the layout, the classes and every split's (image, mask) pairs of a dataset folder.

    Structural problems (no layout, no class names, an empty split) raise ``DatasetError``; an image
    without a mask, or a list entry without an image, is recorded in ``problems`` and left out.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    layout = detect_layout(root) if layout == "auto" else layout
    if layout not in LAYOUTS:
        raise DatasetError(f"{root}: layout {layout!r} unknown, expected one of {', '.join(LAYOUTS)} or 'auto'")
    problems: list[str] = []
    splits: dict[str, list[tuple[Path, Path]]] = {}
    source: dict[str, str] = {}
    if layout == "split_dirs":
        for s in SPLITS:
            if (root / s / "images").is_dir():
                images = _images_by_stem(root / s / "images")
                splits[s] = _pairs(sorted(images), images, _mask_dir(root / s), str(root / s / "images"), problems)
                source[s] = f"{s}/"
    else:
        images = _images_by_stem(root / ("JPEGImages" if layout == "voc" else "images"))
        mask_dir = root / "SegmentationClass" if layout == "voc" else _mask_dir(root)
        list_dirs = [root / "ImageSets" / "Segmentation"] if layout == "voc" else [root / "splits", root]
        lists = {s: next((d / f"{s}.txt" for d in list_dirs if (d / f"{s}.txt").is_file()), None) for s in SPLITS}
        default = root / "ImageSets" / "Segmentation" / "default.txt"  # CVAT writes only this one
        if lists["train"] is None and lists["val"] is None and layout == "voc" and default.is_file():
            lists["train"] = default
        for s, path in lists.items():
            if path is not None:
                splits[s] = _pairs(_read_list(path), images, mask_dir, str(path), problems)
                source[s] = str(path.relative_to(root))
        if not splits:  # no list at all: every image
            splits["train"], source["train"] = _pairs(sorted(images), images, mask_dir, str(root), problems), "all images"
    if not splits:
        raise DatasetError(f"{root}: no split found, expected train/ val/ test/ folders or split lists")
    if "val" not in splits and len(splits.get("train", ())) >= 2:
        by_stem = {image.stem: (image, mask) for image, mask in splits["train"]}
        rest, held = _fraction_split(list(by_stem), val_fraction, split_seed, f"{root} ({source['train']})")
        splits["train"], splits["val"] = [by_stem[s] for s in rest], [by_stem[s] for s in held]
        source["val"] = f"{val_fraction:g} of {source['train']}, seed {split_seed}"
        source["train"] += ", less val"
    if "test" not in splits and "val" in splits:
        splits["test"], source["test"] = splits["val"], "the val split"
    for s in splits:
        if not splits[s]:
            raise DatasetError(f"{root}: split {s!r} ({source[s]}) has no image with a mask")
    names, colours = _class_names(root, layout, classes, palette)
    return FolderScan(root, layout, splits, names, colours, source, problems)


def _class_names(root: Path, layout: str, classes: tuple[str, ...] | list[str] | None,
                 palette: list[tuple[int, int, int]] | None) -> tuple[tuple[str, ...], list | None]:
    labelmap = root / "labelmap.txt"
    colours = [tuple(int(v) for v in c) for c in palette] if palette is not None else None
    if labelmap.is_file():
        names, map_colours = read_labelmap(labelmap)
        colours = colours if colours is not None else map_colours
        names = tuple(classes) if classes else names
    elif classes:
        names = tuple(classes)
    elif (root / "classes.txt").is_file():
        names = read_classes(root / "classes.txt")
    else:
        raise DatasetError(f"{root}: no class names, expected classes.txt (one name per line), labelmap.txt, or "
                           "data.dataset_kwargs.classes")
    if colours is not None and len(colours) != len(names):
        raise DatasetError(f"{root}: {len(names)} classes but {len(colours)} palette colours, expected one each")
    if len(names) >= IGNORE_INDEX:
        raise DatasetError(f"{root}: {len(names)} classes, expected at most {IGNORE_INDEX - 1}")
    return names, colours


def read_mask_values(path: Path) -> tuple[np.ndarray, bool]:
    """A mask file's pixels: ``(H, W)`` values of an index mask, or ``(H, W, 3)`` colours; and which."""
    try:
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA"):
                return np.asarray(im.convert("RGB")), True
            if im.mode not in ("L", "P", "I", "I;16", "I;16B", "1"):
                raise DatasetError(f"{path}: mask has mode {im.mode}, expected an index (L/P/16-bit) or RGB PNG")
            return np.asarray(im).astype(np.int64), False
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"{path}: cannot decode mask ({e})") from None


def colours_to_values(rgb: np.ndarray, palette: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W, 3)`` colours -> ``(H, W)`` palette indices, and a mask of the pixels whose colour is not in it.

    The VOC boundary colour (224, 224, 192) becomes ``IGNORE_INDEX`` unless the palette lists it.
    """
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = np.array([(r << 16) | (g << 8) | b for r, g, b in palette], dtype=np.int64)
    order = np.argsort(table)
    pos = np.clip(np.searchsorted(table[order], codes), 0, len(table) - 1)
    found = table[order][pos] == codes
    values = np.where(found, order[pos], IGNORE_INDEX)
    void = (VOC_VOID[0] << 16) | (VOC_VOID[1] << 8) | VOC_VOID[2]
    unknown = ~found & (codes != void)
    return values, unknown


def to_labels(values: np.ndarray, num_classes: int, reduce_zero_label: bool, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """File values -> ``(H, W)`` uint8 training labels (``IGNORE_INDEX`` = unlabelled), and the mask of
    values that are neither a class nor the ignore value.

    ``reduce_zero_label``: file value 0 means "unlabelled" and class k is stored as k + 1.
    """
    ignored = values == ignore_index
    labels = values - 1 if reduce_zero_label else values
    if reduce_zero_label:
        ignored |= values == 0
    bad = ~ignored & ((labels < 0) | (labels >= num_classes))
    return np.where(ignored | bad, IGNORE_INDEX, labels).astype(np.uint8), bad


def decode_mask(path: Path, num_classes: int, palette: list[tuple[int, int, int]] | None,
                reduce_zero_label: bool = False, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """A mask file -> ``(H, W)`` uint8 labels, or a one-line ``DatasetError`` naming the file and value."""
    values, is_colour = read_mask_values(path)
    if is_colour:
        if palette is None:
            raise DatasetError(f"{path}: a colour mask, but the dataset has no palette, expected labelmap.txt "
                               "(name:r,g,b:: lines) or index masks")
        labels, unknown = colours_to_values(values, palette)
        if unknown.any():
            y, x = np.argwhere(unknown)[0]
            raise DatasetError(f"{path}: colour {tuple(int(v) for v in values[y, x])} at (x={x}, y={y}) is not "
                               f"in the palette, expected one of the {len(palette)} labelmap.txt colours")
        return labels.astype(np.uint8)  # palette indices are the classes; VOC void is ignore
    labels, bad = to_labels(values, num_classes, reduce_zero_label, ignore_index)
    if bad.any():
        v = int(values[bad][0])
        first = 1 if reduce_zero_label else 0
        raise DatasetError(f"{path}: label value {v} is outside the {num_classes} classes, expected "
                           f"{first}..{num_classes - 1 + first} or {ignore_index} (ignore)")
    return labels


class Folder(FilePairDataset):
    """A labelled folder in any of ``LAYOUTS`` (see the module docstring); classes and palette per instance."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        pipeline: Pipeline | None = None,
        aug_seed: int = 0,
        classes: list[str] | tuple[str, ...] | None = None,
        palette: list[tuple[int, int, int]] | None = None,
        layout: str = "auto",
        reduce_zero_label: bool = False,
        ignore_index: int = IGNORE_INDEX,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        skip_unpaired: bool = False,
    ) -> None:
        """Args:
            classes: class names in id order (default: labelmap.txt, else classes.txt).
            palette: an (r, g, b) per class: the colours of colour masks (default: labelmap.txt).
            layout: one of ``LAYOUTS``, or ``auto``.
            reduce_zero_label: file value 0 is "unlabelled" and class k is stored as k + 1 (ADE20K style).
            ignore_index: the file value of unlabelled pixels in index masks.
            val_fraction, split_seed: the seeded hold-out when the folder has no val split.
            skip_unpaired: leave out images without a mask (and list entries without an image) instead
                of stopping at the first with a one-line error.
        """
        if split not in SPLITS:
            raise ValueError(f"split {split!r} unknown, expected one of {SPLITS}")
        scan = scan_folder(root, layout, classes, palette, val_fraction, split_seed)
        if scan.problems and not skip_unpaired:
            raise DatasetError(scan.problems[0])
        if split not in scan.splits:
            raise DatasetError(f"{scan.root}: no {split} split (found: {', '.join(scan.splits)}), expected a "
                               f"{split}/ folder or list, or, for val, >= 2 training images to hold out")
        pairs = scan.splits[split]
        super().__init__([p[0] for p in pairs], [p[1] for p in pairs], pipeline, aug_seed)
        self.scan = scan
        self.classes = scan.classes
        self.colour_palette = scan.palette  # the colours masks are drawn in (None: index masks)
        self.palette = scan.palette or distinct_colours(len(scan.classes))
        self.reduce_zero_label, self.file_ignore_index = reduce_zero_label, ignore_index

    def read_mask(self, path: Path) -> np.ndarray:
        return decode_mask(path, len(self.classes), self.colour_palette, self.reduce_zero_label,
                           self.file_ignore_index)
