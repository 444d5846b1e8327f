"""excise's offline pipeline: scoring, masks, circuits, correction, evaluation, export."""

import os

# No code path of excise reaches a model hub: everything is local or embedded.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

__version__ = "0.1.0"
