"""The released checkpoints: one literal table (name -> our config, download URLs, the seed's mIoU).

The URLs and mIoU figures are the official README's table "Config | Dataset | Head | mIoU | Download |
Config"; every released checkpoint has the Segmenter head. The official SUIM heads predict 9 classes
(``class_map="suim9"``); everything else predicts the dataset's classes as our configs do.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ZooEntry:
    """One released checkpoint.

    ``config`` is relative to the repository root; ``cfg_options`` make it match the checkpoint (the
    official SUIM head has 9 outputs); ``class_map`` names the output mapping onto our classes
    (``clustvit.zoo.classmap.CLASS_MAPS``), ``None`` when the outputs already are our classes.
    """

    name: str
    config: str
    url: str
    official_config_url: str
    dataset: str
    head: str
    miou: float  # the seed's figure for this checkpoint
    cfg_options: tuple[str, ...] = ()
    class_map: str | None = None


_DTU = "https://data.dtu.dk/ndownloader/files/"
_ADE = "config/clustvit/ade20k/segmenter_clustvit-b_mask_1xb8-160k_ade20k-512x512"
_OTHERS = "config/clustvit/others/segmenter_clustvit-b_mask_1xb8-80k"
_SUIM9 = dict(cfg_options=("model.num_classes=9",), class_map="suim9")

ZOO: dict[str, ZooEntry] = {e.name: e for e in [
    ZooEntry("clustvit-b_k3ip3_ade20k", f"{_ADE}_k3_ip3.py", _DTU + "64205592", _DTU + "64205505", "ADE20K", "Segmenter", 46.10),
    ZooEntry("clustvit-b_k3ip4_ade20k", f"{_ADE}_k3_ip4.py", _DTU + "64205595", _DTU + "64205511", "ADE20K", "Segmenter", 46.19),
    ZooEntry("cts-b_ade20k", "config/cts/segmenter_cts-b_mask_1xb8-160k_ade20k-512x512.py", _DTU + "64205607", _DTU + "64205529", "ADE20K", "Segmenter", 45.96),
    ZooEntry("vit-b_ade20k", "config/vit/segmenter_vit-b_mask_1xb8-160k_ade20k-512x512.py", _DTU + "64205613", _DTU + "64205550", "ADE20K", "Segmenter", 49.22),
    ZooEntry("clustvit-b_k3ip3_suim", f"{_OTHERS}_suim-512x512_k3_ip3.py", _DTU + "64205589", _DTU + "64205496", "SUIM", "Segmenter", 61.95, **_SUIM9),
    ZooEntry("clustvit-b_k4ip3_suim", f"{_OTHERS}_suim-512x512_k4_ip3.py", _DTU + "64205583", _DTU + "64205490", "SUIM", "Segmenter", 63.26, **_SUIM9),
    ZooEntry("cts-b_suim", "config/cts/segmenter_cts-b_mask_1xb8-80k_suim-512x512.py", _DTU + "64205601", _DTU + "64205523", "SUIM", "Segmenter", 66.33, **_SUIM9),
    ZooEntry("vit-b_suim", "config/vit/segmenter_vit-b_mask_1xb8-80k_suim-512x512.py", _DTU + "64205610", _DTU + "64205544", "SUIM", "Segmenter", 69.91, **_SUIM9),
    ZooEntry("clustvit-b_k3ip3_rumexweeds", f"{_OTHERS}_rumexweeds-512x512_k3_ip3.py", _DTU + "64205577", _DTU + "64205481", "RumexWeeds", "Segmenter", 49.82),
    ZooEntry("clustvit-b_k3ip4_rumexweeds", f"{_OTHERS}_rumexweeds-512x512_k3_ip4.py", _DTU + "64205580", _DTU + "64205487", "RumexWeeds", "Segmenter", 51.53),
    ZooEntry("cts-b_rumexweeds", "config/cts/segmenter_cts-b_mask_1xb8-80k_rumexweeds-512x512.py", _DTU + "64205598", _DTU + "64205517", "RumexWeeds", "Segmenter", 49.13),
    ZooEntry("vit-b_rumexweeds", "config/vit/segmenter_vit-b_mask_1xb8-80k_rumexweeds-512x512.py", _DTU + "64205604", _DTU + "64205538", "RumexWeeds", "Segmenter", 51.56),
]}
