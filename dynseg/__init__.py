"""dynseg: ClustViT (clustering-based token merging for ViT semantic segmentation) in plain PyTorch."""

__version__ = "0.1.0"


def load(*args, **kwargs):
    """``model = dynseg.load(config, checkpoint); mask = model.predict(rgb_uint8)`` (see ``dynseg.api.load``)."""
    from .api import load as _load  # imported on use: ``import dynseg`` stays light for the CLIs

    return _load(*args, **kwargs)


def save_pretrained(*args, **kwargs):
    """``dynseg.save_pretrained(model, DIR)``: a hub-style folder ``dynseg.load(DIR)`` reads (``dynseg.zoo.hub``)."""
    from .zoo.hub import save_pretrained as _save

    return _save(*args, **kwargs)


__all__ = ["load", "save_pretrained", "__version__"]
