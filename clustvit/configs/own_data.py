"""The config of ``clustvit train --data DIR --model MODEL``: a model config pointed at your own labelled folder.

MODEL is one of:

* a short form ``FAMILY-SIZE[_kK_ipI]``: ``clustvit-b_k3_ip3``, ``clustvit-t_k2_ip4``, ``vit-s``, ``cts-b``.
  The template is the family's SUIM Segmenter config (512x512, 80k iterations: robotics folders are closer to
  SUIM than to ADE20K); another size takes its widths and ImageNet weights from that size's packaged config,
  and a k / ip without a packaged leaf sets ``model.backbone.num_clusters`` / ``injection_point``;
* a packaged config name or a config file (``clustvit configs``);
* a zoo name (``clustvit zoo list``): its config.

The result is the model config with ``data.type="Folder"``, ``data.root`` = the folder, ``data.dataset_kwargs``
= how to read it (class names pinned in folder order), ``model.num_classes`` = the folder's class count; the
template's pipelines, schedule and optimizer are kept, and ``cfg_options`` apply last.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from clustvit.configs import Config, find_config, list_configs, load_raw, parse_overrides, validate_config
from clustvit.data.folder import scan_folder
from clustvit.errors import ConfigError
from clustvit.zoo.table import ZOO

SHORT_FORM = re.compile(r"^(?P<family>clustvit|vit|cts)-(?P<size>[tslb])(?:_k(?P<k>\d+)_?ip(?P<ip>\d+))?$")
SHORT_FORMS = "clustvit-S[_kK_ipI], vit-S or cts-b with S one of t/s/b/l, e.g. clustvit-b_k3_ip3, clustvit-t_k2_ip4, vit-s"
# The SUIM Segmenter config of each family at size B: the template of every short form.
SUIM_TEMPLATES = {
    "clustvit": "segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3",
    "vit": "segmenter_vit-b_mask_1xb8-80k_suim-512x512",
    "cts": "segmenter_cts-b_mask_1xb8-80k_suim-512x512",
}
CLUSTVIT_SUIM_LEAF = "segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k{k}_ip{ip}"
# The packaged config of each other size (ADE20K is where the paper trained them): its widths are copied.
SIZE_CONFIGS = {
    "clustvit": "segmenter_clustvit-{size}_mask_1xb8-160k_ade20k-512x512_k3_ip3",
    "vit": "segmenter_vit-{size}_mask_1xb8-160k_ade20k-512x512",
}
# What makes a size: the widths and depth, and the ImageNet weights of that width. Not the image size, which
# stays the template's so that pipelines and model agree.
SIZE_KEYS = (("backbone", "embed_dim"), ("backbone", "depth"), ("backbone", "num_heads"),
             ("backbone", "mlp_ratio"), ("backbone", "out_indices"), ("backbone", "cluster_mlp_size"),
             ("decode_head", "embed_dim"), ("decode_head", "num_heads"), ("pretrained",))


def _override(path: tuple[str, ...], value: Any) -> str:
    """One ``--cfg-options`` string (values are written as Python literals, which the loader reads back)."""
    return f"{'.'.join(path)}={value!r}"


def _lookup(cfg: Config, path: tuple[str, ...]) -> Any:
    node: Any = cfg
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _packaged(name: str) -> bool:
    return any(p.stem == name for p in list_configs())


def resolve_model(model: str) -> tuple[Path, list[str]]:
    """The config file MODEL stands for and the overrides that make it that model (see the module docstring).

    Raises:
        ConfigError: MODEL is none of the accepted forms, in one line listing them.
    """
    m = SHORT_FORM.match(model)
    if m is None:
        if model in ZOO and not Path(model).exists():
            return find_config(ZOO[model].config), []
        if Path(model).is_file() or _packaged(model.removesuffix(".py")):
            return find_config(model), []
        raise ConfigError(f"--model {model}: unknown, expected a short form ({SHORT_FORMS}), a packaged config "
                          "(clustvit configs), a config file or a zoo name (clustvit zoo list)")
    family, size, k, ip = m["family"], m["size"], m["k"], m["ip"]
    if family != "clustvit" and k is not None:
        raise ConfigError(f"--model {model}: k and ip are ClustViT's, expected {family}-{size} ({SHORT_FORMS})")
    if family == "cts" and size != "b":
        raise ConfigError(f"--model {model}: CTS is packaged at size B only, expected cts-b ({SHORT_FORMS})")
    template = SUIM_TEMPLATES[family]
    leaf = CLUSTVIT_SUIM_LEAF.format(k=k, ip=ip)
    if family == "clustvit" and size == "b" and k is not None and _packaged(leaf):
        return find_config(leaf), []  # the paper's own leaf: the same values, a clearer name
    overrides: list[str] = []
    if size != "b":
        base, _ = load_raw(template)
        sized, _ = load_raw(SIZE_CONFIGS[family].format(size=size))
        overrides += [_override(("model", *path), _lookup(sized["model"], path)) for path in SIZE_KEYS
                      if _lookup(sized["model"], path) not in (None, _lookup(base["model"], path))]
    if k is not None:
        overrides += [_override(("model", "backbone", "num_clusters"), int(k)),
                      _override(("model", "backbone", "injection_point"), int(ip))]
    return find_config(template), overrides


def own_data_config(model: str, data_dir: str | os.PathLike, folder_kwargs: dict[str, Any],
                    cfg_options: list[str] | None = None) -> Config:
    """The validated training config of MODEL on the labelled folder ``data_dir``.

    Args:
        model: a short form, packaged config name, config file or zoo name (see the module docstring).
        data_dir: the labelled folder (any layout of ``clustvit.data.folder``); stored as an absolute path so
            that the saved config works from any folder.
        folder_kwargs: ``Folder`` arguments (``clustvit.cli.data.folder_kwargs``): classes, layout,
            reduce_zero_label, ignore_index, val_fraction, split_seed.
        cfg_options: ``key.path=value`` overrides, applied last.

    Raises:
        ConfigError: an unknown MODEL, a bad override, or ``model.num_classes`` overridden to a count the
            folder does not have (one line).
        clustvit.data.base.DatasetError: the folder cannot be read (no layout, no class names ...).
    """
    path, model_overrides = resolve_model(model)
    root = Path(data_dir).resolve()
    kwargs = {"_delete_": True, **folder_kwargs}  # replace the template's dataset arguments, not merge into them
    data_overrides = [_override(("data", "type"), "Folder"), _override(("data", "root"), str(root)),
                      _override(("data", "dataset_kwargs"), kwargs)]
    user = list(cfg_options or [])
    cfg, origins = load_raw(path, [*model_overrides, *data_overrides, *user])
    dk = cfg["data"]["dataset_kwargs"]
    scan = scan_folder(cfg["data"]["root"], dk.get("layout", "auto"), dk.get("classes"), dk.get("palette"),
                       dk.get("val_fraction", 0.1), dk.get("split_seed", 0))
    wanted = _lookup(parse_overrides(user), ("model", "num_classes"))
    if wanted is not None and wanted != len(scan.classes):
        raise ConfigError(f"--cfg-options: model.num_classes={wanted}, but {root} has {len(scan.classes)} classes "
                          f"({', '.join(scan.classes)}); expected {len(scan.classes)} or no override")
    # Pinned in the saved config: a checkpoint's class ids mean these names, whatever classes.txt says later.
    dk["classes"] = list(scan.classes)
    cfg["model"]["num_classes"] = len(scan.classes)
    origins[("model", "num_classes")] = origins[("data", "dataset_kwargs", "classes")] = f"--data {root}"
    validate_config(cfg, origins)
    return cfg
