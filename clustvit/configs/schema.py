"""Strict validation of a resolved config: every key known, every value of the right type and range.

The model's backbone/head keys are checked against the constructor signatures of the classes in
the model builder's literal dict (``clustvit.models.build``), so a new constructor argument needs no
schema edit here. Everything else is checked against the small literal schemas below.
"""

from __future__ import annotations

import inspect
from typing import Any

from clustvit.data.build import DATASETS, validate_data_cfg
from clustvit.errors import ConfigError
from clustvit.models import build

Config = dict[str, Any]
Origins = dict[tuple[str, ...], str]  # key path -> the file that introduced it

# Leaf schemas: key -> allowed Python types (None in the tuple allows None). Nested dicts: a dict.
NUM = (int, float)
SEQ = (tuple, list)
OPTIMIZER = {"type": (str,), "lr": NUM, "momentum": NUM, "weight_decay": NUM, "nesterov": (bool,)}
SCHEDULE = {
    "max_iters": (int,),  # iterations, not epochs
    "power": NUM,  # poly decay exponent
    "min_lr": NUM,
    "warmup_iters": (int,),
    "log_interval": (int,),
    "val_interval": (int,),
    "checkpoint_interval": (int,),
}
RUNTIME = {
    "seed": (int,),
    "keep_checkpoints": (int,),
    "skip_nonfinite": (bool,),
    "require_pretrained": (bool,),
    "grad_clip": (int, float, type(None)),
    # A whole-segmentor checkpoint to start from (file, zoo name or hub folder; `clustvit train --from`):
    # its class-specific head keys are re-initialised when the class count differs. --resume wins over it.
    "load_from": (str, type(None)),
}
TRAIN_PIPELINE = {
    "scale": SEQ,
    "ratio_range": (tuple, list, type(None)),
    "keep_ratio": (bool,),
    "crop_size": SEQ,
    "cat_max_ratio": NUM,
    "flip_prob": NUM,
    "photometric": (bool,),
}
TEST_PIPELINE = {"scale": SEQ, "keep_ratio": (bool,)}
DATA = {
    "type": (str,),
    "root": (str,),
    "train_pipeline": TRAIN_PIPELINE,
    "test_pipeline": TEST_PIPELINE,
    "batch_size": (int,),
    "num_workers": (int,),
    "val_batch_size": (int,),
    "dataset_kwargs": (dict,),  # free-form: the dataset constructor checks its own arguments
}
TEST_CFG = {"mode": (str,), "crop_size": SEQ, "stride": SEQ}
MODEL = {
    "backbone": None,  # checked against the constructor signature
    "decode_head": None,
    "num_classes": (int,),
    "clust_loss_weight": NUM,
    "ignore_index": (int,),
    "pretrained": (str, type(None)),
    "test_cfg": TEST_CFG,
}
TOP = {"model": MODEL, "data": DATA, "optimizer": OPTIMIZER, "schedule": SCHEDULE, "runtime": RUNTIME}
DATASET_TYPES = tuple(DATASETS)  # the literal dict of data.build
# Constructor arguments the builder fills in itself (from the backbone or model), never from a config.
BUILDER_FILLED = {"in_channels", "num_classes", "in_chans"}
# Types named by the official release whose implementation lands with a later issue.


def _where(origins: Origins, path: tuple[str, ...]) -> str:
    """The file that introduced `path` (or its closest recorded parent)."""
    for n in range(len(path), 0, -1):
        if path[:n] in origins:
            return origins[path[:n]]
    return "<config>"


def _fail(origins: Origins, path: tuple[str, ...], msg: str) -> None:
    raise ConfigError(f"{_where(origins, path)}: {'.'.join(path)}: {msg}")


def _check_type(value: Any, allowed: tuple[type, ...], origins: Origins, path: tuple[str, ...]) -> None:
    # bool is an int subclass; an int slot must not silently take True.
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if not ok:
        names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
        _fail(origins, path, f"expected {names}, got {type(value).__name__} {value!r}")


def _check_dict(cfg: Config, schema: dict, origins: Origins, path: tuple[str, ...]) -> None:
    if not isinstance(cfg, dict):
        _fail(origins, path, f"expected a dict, got {type(cfg).__name__}")
    for key, value in cfg.items():
        sub = (*path, key)
        if key not in schema:
            _fail(origins, sub, f"unknown key (known: {', '.join(schema)})")
        spec = schema[key]
        if isinstance(spec, dict):
            _check_dict(value, spec, origins, sub)
        elif spec is not None:
            _check_type(value, spec, origins, sub)


def model_types() -> dict[str, type]:
    """Type name -> class, read from the literal dict(s) in ``clustvit.models.build``."""
    return {**build.BACKBONES, **build.HEADS}


_ANNOTATION_TYPES = {"int": (int,), "float": NUM, "bool": (bool,), "str": (str,), "None": (type(None),),
                     "Sequence": SEQ, "tuple": SEQ, "list": SEQ}


def _allowed_types(param: inspect.Parameter) -> tuple[type, ...] | None:
    """Allowed config types for a constructor argument, read from its annotation (else its default).

    Annotations are strings under ``from __future__ import annotations`` (``'int | Sequence[int]'``);
    only the outer names matter here, so the string is split on ``|`` and ``[``.
    """
    ann = param.annotation
    if isinstance(ann, str) and ann:
        allowed: set[type] = set()
        for part in ann.split("|"):
            name = part.strip().split("[")[0].split(".")[-1]
            if name not in _ANNOTATION_TYPES:
                return None  # an annotation we cannot judge: accept anything
            allowed.update(_ANNOTATION_TYPES[name])
        return tuple(allowed)
    default = param.default
    if default is inspect.Parameter.empty or default is None:
        return None
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, int | float):
        return NUM if isinstance(default, float) else (int,)
    if isinstance(default, tuple | list):
        return SEQ
    return (type(default),)


def _check_module(cfg: Config, types_: dict[str, type], origins: Origins, path: tuple[str, ...]) -> None:
    """Checks a backbone/head dict against the constructor signature of its `type`."""
    if not isinstance(cfg, dict) or "type" not in cfg:
        _fail(origins, path, "expected a dict with a 'type' key")
    name = cfg["type"]
    if name not in types_:
        why = f"unknown type (known: {', '.join(sorted(types_))})"
        _fail(origins, (*path, "type"), f"{name!r}: {why}")
    params = build.constructor_params(types_[name])
    for key, value in cfg.items():
        if key == "type":
            continue
        if key in BUILDER_FILLED or key not in params:
            known = [k for k in params if k not in BUILDER_FILLED and k != "self"]
            _fail(origins, (*path, key), f"unknown key for {name} (known: {', '.join(known)})")
        if key in params:
            allowed = _allowed_types(params[key])
            if allowed is not None:
                _check_type(value, allowed, origins, (*path, key))


def _check_crop(size: Any, origins: Origins, path: tuple[str, ...]) -> None:
    # The backbone patchifies at stride 16: a crop that is not a multiple leaves a ragged border.
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 and s % 16 == 0 for s in size):
        _fail(origins, path, f"expected two positive multiples of 16, got {tuple(size)!r}")


def _signature_default(types_: dict[str, type], cfg: Config, key: str) -> Any:
    param = build.constructor_params(types_[cfg["type"]]).get(key)
    return cfg.get(key, None if param is None else param.default)


def _check_values(cfg: Config, types_: dict[str, type] | None, origins: Origins) -> None:
    """Range checks that types alone cannot express."""
    model, data, sched = cfg.get("model", {}), cfg.get("data", {}), cfg.get("schedule", {})
    bb = model.get("backbone", {})
    if types_ is not None and bb.get("type") in types_:
        depth = _signature_default(types_, bb, "depth")
        ip = _signature_default(types_, bb, "injection_point")
        if isinstance(ip, int) and isinstance(depth, int) and not 0 <= ip < depth:
            _fail(origins, ("model", "backbone", "injection_point"), f"{ip} is outside [0, depth={depth})")
        k = _signature_default(types_, bb, "num_clusters")
        if isinstance(k, int) and k < 1:
            _fail(origins, ("model", "backbone", "num_clusters"), f"expected >= 1, got {k}")
        out = _signature_default(types_, bb, "out_indices")
        out = [out] if isinstance(out, int) else out  # -1 = the last block
        if isinstance(out, tuple | list) and isinstance(depth, int) and any(not -depth <= i < depth for i in out):
            _fail(origins, ("model", "backbone", "out_indices"), f"{out} not all in [-depth, depth={depth})")
        dim, heads = _signature_default(types_, bb, "embed_dim"), _signature_default(types_, bb, "num_heads")
        if isinstance(dim, int) and isinstance(heads, int) and dim % heads:
            _fail(origins, ("model", "backbone", "num_heads"), f"embed_dim {dim} not divisible by {heads}")
    if "crop_size" in data.get("train_pipeline", {}):
        _check_crop(data["train_pipeline"]["crop_size"], origins, ("data", "train_pipeline", "crop_size"))
    test_cfg = model.get("test_cfg", {})
    if "crop_size" in test_cfg:
        _check_crop(test_cfg["crop_size"], origins, ("model", "test_cfg", "crop_size"))
    if test_cfg.get("mode", "whole") not in ("whole", "slide"):
        _fail(origins, ("model", "test_cfg", "mode"), f"expected 'whole' or 'slide', got {test_cfg['mode']!r}")
    if "type" in data and data["type"] not in DATASET_TYPES:
        _fail(origins, ("data", "type"), f"{data['type']!r}: expected one of {', '.join(DATASET_TYPES)}")
    for key in ("batch_size", "val_batch_size"):
        if key in data and data[key] < 1:
            _fail(origins, ("data", key), f"expected >= 1, got {data[key]}")
    for key in ("max_iters", "log_interval", "val_interval", "checkpoint_interval"):
        if key in sched and sched[key] < 1:
            _fail(origins, ("schedule", key), f"expected >= 1, got {sched[key]}")
    lr, min_lr = cfg.get("optimizer", {}).get("lr"), sched.get("min_lr")
    if lr is not None and min_lr is not None and min_lr > lr:
        _fail(origins, ("schedule", "min_lr"), f"{min_lr} is above optimizer.lr {lr}")
    if model.get("num_classes", 1) < 1:
        _fail(origins, ("model", "num_classes"), f"expected >= 1, got {model['num_classes']}")


def validate_config(cfg: Config, origins: Origins) -> None:
    """Raises ConfigError (one line: file, key, what was expected) on the first problem found.

    Args:
        cfg: the resolved config.
        origins: key path -> the file that introduced it (from ``clustvit.configs.loader``).
    """
    _check_dict(cfg, TOP, origins, ())
    for key in TOP:
        if key not in cfg:
            raise ConfigError(f"<config>: missing top-level section {key!r}")
    types_ = model_types()
    _check_module(cfg["model"].get("backbone"), types_, origins, ("model", "backbone"))
    _check_module(cfg["model"].get("decode_head"), types_, origins, ("model", "decode_head"))
    _check_values(cfg, types_, origins)
    try:  # the data layer's own checks (dataset_kwargs against the dataset constructor ...)
        validate_data_cfg(cfg["data"])
    except ValueError as e:
        raise ConfigError(f"{_where(origins, ('data', 'type'))}: {e}") from None
