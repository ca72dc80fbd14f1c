"""IoUAccumulator against torchmetrics, and the size-stratified recall on hand-made masks."""

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from clustvit.engine.metrics import IoUAccumulator, SizeStratifiedRecall, size_stratified_counts


def _random_batch(seed: int, n: int, shape=(3, 17, 23)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, n, shape, generator=g)
    pred = torch.randint(0, n, shape, generator=g)
    target[torch.rand(shape, generator=g) < 0.2] = 255  # ignore pixels
    target[target == 2] = 1  # class 2: predicted but never in the ground truth -> IoU 0, Acc NaN
    pred[pred == n - 1] = 0  # class n-1: in neither -> IoU NaN, Acc NaN
    target[target == n - 1] = 0
    return pred, target


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_matches_torchmetrics(seed: int) -> None:
    n = 7
    acc = IoUAccumulator(n, ignore_index=255)
    preds, targets = [], []
    for k in range(3):  # several updates accumulate
        p, t = _random_batch(seed * 10 + k, n)
        acc.update(p, t)
        preds.append(p)
        targets.append(t)
    p, t = torch.cat(preds), torch.cat(targets)
    res = acc.compute()

    iou_tm = MulticlassJaccardIndex(n, ignore_index=255, average=None)(p, t) * 100
    miou_tm = MulticlassJaccardIndex(n, ignore_index=255, average="macro")(p, t) * 100
    acc_tm = MulticlassAccuracy(n, ignore_index=255, average=None)(p, t) * 100
    aacc_tm = MulticlassAccuracy(n, ignore_index=255, average="micro")(p, t) * 100

    assert math.isclose(res["mIoU"], float(miou_tm), abs_tol=1e-4)
    assert math.isclose(res["aAcc"], float(aacc_tm), abs_tol=1e-4)
    assert res["IoU"][2] == 0.0 and math.isnan(res["IoU"][n - 1])
    assert math.isnan(res["Acc"][2]) and math.isnan(res["Acc"][n - 1])
    present = [c for c in range(n) if c not in (2, n - 1)]
    for c in present:
        assert math.isclose(res["IoU"][c], float(iou_tm[c]), abs_tol=1e-4)
        assert math.isclose(res["Acc"][c], float(acc_tm[c]), abs_tol=1e-4)
    # mmseg's mAcc averages only classes with ground truth (torchmetrics' macro would count class 2 as 0).
    assert math.isclose(res["mAcc"], float(acc_tm[present].mean()), abs_tol=1e-4)


def test_merge_equals_single_pass_and_perfect_prediction() -> None:
    n = 5
    p1, t1 = _random_batch(3, n)
    p2, t2 = _random_batch(4, n)
    a, b, both = IoUAccumulator(n), IoUAccumulator(n), IoUAccumulator(n)
    a.update(p1, t1)
    b.update(p2, t2)
    both.update(torch.cat([p1, p2]), torch.cat([t1, t2]))
    a.merge(b)
    assert torch.equal(a.confusion, both.confusion)

    perfect = IoUAccumulator(n)
    perfect.update(t1.clamp(max=n - 1), t1)
    r = perfect.compute()
    assert r["aAcc"] == 100.0 and r["mIoU"] == 100.0 and r["mAcc"] == 100.0


def test_empty_and_bad_labels() -> None:
    acc = IoUAccumulator(3)
    r = acc.compute()
    assert math.isnan(r["mIoU"]) and math.isnan(r["aAcc"])
    t = torch.full((1, 4, 4), 255)
    acc.update(torch.zeros(1, 4, 4, dtype=torch.long), t)  # all ignored: nothing counted
    assert acc.confusion.sum() == 0
    with pytest.raises(ValueError, match="labels must be in"):
        acc.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.full((1, 4, 4), 7))
    with pytest.raises(ValueError, match="same shape"):
        acc.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long))


def test_size_stratified_recall_by_hand() -> None:
    # 20x20 = 400 px image. Class 1: a 2x2 blob (1%, small) and a separate 6x10 blob (15%, large);
    # class 2: a 5x8 block (10%, medium); class 0: the rest (75%, huge).
    t = np.zeros((20, 20), dtype=np.int64)
    t[0:2, 0:2] = 1
    t[10:16, 10:20] = 1
    t[0:5, 10:18] = 2
    t[19, 0] = 255  # ignore pixels still count in the image area, never as an object
    p = t.copy()
    p[0, 0] = 0  # small: 3 of 4 hit
    p[10, 10:20] = 0  # large: 50 of 60 hit
    p[0:5, 10:18] = 1  # medium: 0 of 40 hit
    counts = size_stratified_counts(p, t, num_classes=3)
    huge_total = 400 - 4 - 60 - 40 - 1
    huge_tp = huge_total  # every class-0 pixel still predicted 0 (the 255 pixel predicted 255)
    assert counts.tolist() == [[3, 4], [0, 40], [50, 60], [huge_tp, huge_total]]

    rec = SizeStratifiedRecall(num_classes=3)
    rec.update(torch.from_numpy(p)[None], torch.from_numpy(t)[None])
    rec.update(torch.from_numpy(t)[None], torch.from_numpy(t)[None])  # a perfect second image
    r = rec.compute()
    assert r["recall_small"] == pytest.approx(100 * 7 / 8)
    assert r["recall_medium"] == pytest.approx(50.0)
    assert r["recall_large"] == pytest.approx(100 * 110 / 120)
    assert r["recall_huge"] == pytest.approx(100.0)

    empty = SizeStratifiedRecall(num_classes=3)
    assert all(math.isnan(v) for v in empty.compute().values())
