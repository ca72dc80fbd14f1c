"""``clustvit data check``: read every image and mask of a dataset once and say what is wrong with it.

The usual reasons for IoU 0 or nan on one's own data are class lists, palettes and ``reduce_zero_label``
that do not match the masks. The check decodes every mask as training would, counts pixels and images
per class, and turns what it sees into errors (a file that training would stop at) and plain-words
suggestions (labels that load but look off).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clustvit.data.base import DatasetError, FilePairDataset, read_image
from clustvit.data.build import DATASETS
from clustvit.data.folder import SPLITS, Folder, colours_to_values, read_mask_values, scan_folder, to_labels
from clustvit.data.transforms import IGNORE_INDEX

MAX_LISTED = 10  # problem lines shown per kind; the rest are counted
SCAN_ARGS = ("layout", "classes", "palette", "val_fraction", "split_seed")  # Folder's arguments scan_folder takes


@dataclass
class CheckReport:
    """What ``check_dataset`` found. Pixel counts are over the unique files of all splits."""

    source: str
    classes: tuple[str, ...]
    split_sizes: dict[str, int]
    split_source: dict[str, str]
    pixels: np.ndarray  # (num_classes,) labelled pixels per class
    images: np.ndarray  # (num_classes,) images in which each class occurs
    unlabelled: int = 0  # pixels marked unlabelled (ignore)
    total: int = 0  # pixels of all masks
    sizes: Counter = field(default_factory=Counter)  # (w, h) -> images
    errors: dict[str, list[str]] = field(default_factory=dict)  # kind -> one line per file
    suggestions: list[str] = field(default_factory=list)
    zero_pixels: int = 0  # raw file value 0 (for the reduce_zero_label advice)
    value_k: int = 0  # raw file value == number of classes (a 1..K labelling)

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, kind: str, line: str) -> None:
        self.errors.setdefault(kind, []).append(line)

    def render(self) -> str:
        """The report as text: splits, the class table, errors, suggestions."""
        out = [f"dataset {self.source}: {len(self.classes)} classes; "
               + ", ".join(f"{s} {n} images ({self.split_source.get(s, '?')})" for s, n in self.split_sizes.items())]
        if self.sizes:
            common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.sizes.most_common(3))
            out.append(f"image sizes: {common}{' ...' if len(self.sizes) > 3 else ''}")
        labelled = max(int(self.pixels.sum()), 1)
        width = max([len(c) for c in self.classes] + [5])
        out.append(f"{'id':>3}  {'class':<{width}}  {'pixels':>7}  {'images':>6}")
        for i, name in enumerate(self.classes):
            out.append(f"{i:>3}  {name:<{width}}  {100 * self.pixels[i] / labelled:6.2f}%  {int(self.images[i]):>6}")
        out.append(f"unlabelled (ignore): {100 * self.unlabelled / max(self.total, 1):.2f}% of all pixels")
        for kind, lines in self.errors.items():
            out.append(f"error: {len(lines)} {kind}:")
            out += [f"  {line}" for line in lines[:MAX_LISTED]]
            if len(lines) > MAX_LISTED:
                out.append(f"  ... and {len(lines) - MAX_LISTED} more")
        out += [f"suggestion: {s}" for s in self.suggestions]
        out.append("ok: no errors" if self.ok else f"{sum(map(len, self.errors.values()))} error(s)")
        return "\n".join(out)


def check_dataset(splits: dict[str, FilePairDataset], source: str, split_source: dict[str, str] | None = None,
                  problems: list[str] = ()) -> CheckReport:
    """Decode every (image, mask) pair of the splits' datasets once and report.

    Args:
        splits: split name -> its dataset (``clustvit.data.folder.Folder`` or another file-pair dataset).
        problems: lines found while pairing files (images without masks ...), reported as errors.
    """
    first = next(iter(splits.values()))
    K = first.num_classes
    report = CheckReport(source, tuple(first.classes), {s: len(d) for s, d in splits.items()}, split_source or {},
                         np.zeros(K, np.int64), np.zeros(K, np.int64))
    for line in problems:
        report.error("images without a mask", line)
    seen: set[Path] = set()
    for ds in splits.values():
        for image, mask in zip(ds.images, ds.masks):
            if mask in seen:
                continue
            seen.add(mask)
            _check_pair(report, ds, Path(image), Path(mask))
    _suggest(report, first)
    return report


def _check_pair(report: CheckReport, ds: FilePairDataset, image: Path, mask: Path) -> None:
    try:
        rgb = read_image(image)  # all of it, as training will: a truncated file fails here, not at iteration N
    except DatasetError as e:
        report.error("unreadable images", str(e))
        return
    size = (rgb.shape[1], rgb.shape[0])  # (w, h), upright
    report.sizes[size] += 1
    try:
        values, is_colour = read_mask_values(mask)
    except DatasetError as e:
        report.error("unreadable masks", str(e))
        return
    if values.shape[:2] != (size[1], size[0]):
        report.error("size mismatches", f"{mask}: mask {values.shape[1]}x{values.shape[0]} but image {image.name} "
                     f"{size[0]}x{size[1]}, expected equal sizes")
        return
    K = report.pixels.shape[0]
    palette = getattr(ds, "colour_palette", None)
    if is_colour:
        if palette is None:
            report.error("colour masks without a palette", f"{mask}: a colour mask, expected an index mask or a "
                         "labelmap.txt with the colours")
            return
        labels, bad = colours_to_values(values, palette)
        if bad.any():
            colour = tuple(int(v) for v in values[bad][0])
            report.error("colours not in the palette", f"{mask}: colour {colour} on {int(bad.sum())} pixels, "
                         f"expected one of the {len(palette)} labelmap.txt colours")
    else:
        report.zero_pixels += int((values == 0).sum())
        report.value_k += int((values == K).sum())
        ignore = getattr(ds, "file_ignore_index", IGNORE_INDEX)
        labels, bad = to_labels(values, K, ds.reduce_zero_label, ignore)
        if bad.any():
            found = np.unique(values[bad])
            first = int(ds.reduce_zero_label)
            report.error("values outside the classes", f"{mask}: value(s) {', '.join(map(str, found[:5].tolist()))} "
                         f"on {int(bad.sum())} pixels, expected {first}..{K - 1 + first} or {ignore} (ignore)")
    labelled = labels[(labels != IGNORE_INDEX) & ~bad]
    counts = np.bincount(labelled.ravel(), minlength=K)[:K]
    report.pixels += counts
    report.images += counts > 0
    report.unlabelled += int(((labels == IGNORE_INDEX) & ~bad).sum())
    report.total += labels.size


def _suggest(report: CheckReport, ds: FilePairDataset) -> None:
    """Plain-words advice where the labels load but look off."""
    K, total = report.pixels.shape[0], max(report.total, 1)
    rz = ds.reduce_zero_label
    if rz and report.zero_pixels / total >= 0.2:
        report.suggestions.append(
            f"value 0 covers {100 * report.zero_pixels / total:.0f}% of the pixels and reduce_zero_label makes it "
            "'unlabelled': if 0 is a real class (background), set reduce_zero_label=False and name it first in the "
            "class list")
    if not rz and report.value_k and report.pixels[0] == 0:
        report.suggestions.append(
            f"the masks use values 1..{K} for {K} classes and never 0: set reduce_zero_label=True (then 0 means "
            "unlabelled and value k is class k-1)")
    missing = [report.classes[i] for i in range(K) if report.images[i] == 0]
    if missing:
        report.suggestions.append(f"{len(missing)} class(es) never occur: {', '.join(missing[:8])}"
                                  f"{' ...' if len(missing) > 8 else ''}; their IoU will be nan (or 0 if predicted)")
    if report.unlabelled / total > 0.5:
        report.suggestions.append(f"{100 * report.unlabelled / total:.0f}% of the pixels are unlabelled: check the "
                                  "ignore value (--ignore-index) and that the masks are not empty")


def check_folder(root: str | Path, **folder_kwargs: object) -> CheckReport:
    """``check_dataset`` over every split of a labelled folder (``Folder``'s arguments); a folder that has
    no layout, classes or split at all raises ``DatasetError``."""
    scan = scan_folder(root, **{k: v for k, v in folder_kwargs.items() if k in SCAN_ARGS})
    splits = {s: Folder(root, s, skip_unpaired=True, **folder_kwargs) for s in scan.splits}
    return check_dataset(splits, f"{root} ({scan.layout} layout)", scan.split_source, scan.problems)


def check_config(cfg: dict) -> CheckReport:
    """``check_dataset`` over the splits of a config's dataset (a folder, or ADE20K / SUIM / RumexWeeds)."""
    data = cfg["data"]
    if data["type"] == "Folder":
        return check_folder(data["root"], **data.get("dataset_kwargs", {}))
    cls = DATASETS[data["type"]]
    if not issubclass(cls, FilePairDataset):
        raise ValueError(f"data.type {data['type']!r} is generated, not read from files: nothing to check")
    splits, missing = {}, []
    for s in SPLITS:
        try:
            splits[s] = cls(data["root"], s, **data.get("dataset_kwargs", {}))
        except DatasetError as e:
            missing.append(f"split {s}: {e}")
    if not splits:
        raise DatasetError(missing[0])
    report = check_dataset(splits, f"{data['root']} ({data['type']})")
    for line in missing:
        report.error("splits that cannot be read", line)
    return report
