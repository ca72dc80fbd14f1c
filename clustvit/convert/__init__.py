"""Everything between the official (mmseg) world and ours, in one place.

* ``weights``: read checkpoints safely, detect their format, rename keys both ways, load strictly;
* ``official``: official model config dicts -> our constructor arguments;
* ``split``: a whole-segmentor checkpoint into backbone / head safetensors files and back.

``clustvit/models/`` stays architecture only: it never sees an official name.
"""
