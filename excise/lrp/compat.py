"""Make lxt 2.1 work on transformers 5 without editing the installed package.

Three things break on transformers 5, each fixed here and nowhere else:

1. `import lxt.efficient` imports lxt's BERT port, which imports
   `find_pruneable_heads_and_indices` from `transformers.pytorch_utils`; transformers 5
   removed it. We add a stand-in that refuses to run: lxt's BERT head pruning is never used.
2. lxt's model table imports torchvision for its ViT map; the PyPI torchvision is CUDA-linked
   and breaks transformers on CPU machines, and excise explains no vision models. We register
   lxt's `vit_torch` module as an empty map before lxt imports it.
3. lxt's attention patch replaces a modeling module's `ALL_ATTENTION_FUNCTIONS`
   (an `AttentionInterface`) by a plain dict, on which transformers 5 calls `.get_interface`.
   `lxt_attention_interface` builds an `AttentionInterface` instead, holding lxt's wrapped
   attention functions in its local mapping (the global registry stays untouched).
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Callable
from functools import cache

LXT_VISION_MODULE = "lxt.efficient.models.vit_torch"


def _find_pruneable_heads_and_indices(*args, **kwargs):
    raise NotImplementedError("lxt's BERT head pruning is not available on transformers 5 (excise never uses it)")


def _install_import_fixes() -> None:
    import transformers.pytorch_utils as pytorch_utils

    if not hasattr(pytorch_utils, "find_pruneable_heads_and_indices"):
        pytorch_utils.find_pruneable_heads_and_indices = _find_pruneable_heads_and_indices
    if LXT_VISION_MODULE not in sys.modules:
        vision = types.ModuleType(LXT_VISION_MODULE, "lxt ViT map, disabled by excise (no torchvision)")
        # lxt's DEFAULT_MAP uses `vision_transformer` as a key: a distinct empty module keeps it unique
        vision.vision_transformer = types.ModuleType("torchvision.models.vision_transformer (not loaded)")
        vision.cp_LRP = {}
        sys.modules[LXT_VISION_MODULE] = vision


@cache
def load_lxt() -> types.ModuleType:
    """Import and return `lxt.efficient.patches` (lxt's AttnLRP forward rules)."""
    _install_import_fixes()
    with warnings.catch_warnings():
        # lxt warns at import that zennit (needed only for its vision patches) is missing
        warnings.filterwarnings("ignore", message=".*zennit.*")
        import lxt.efficient.patches as patches
    return patches


def lxt_attention_interface(original) -> object:
    """A new `AttentionInterface` whose every function is lxt's AttnLRP-wrapped `original` one.

    The wrapper divides the gradient of q and k by 4 and of v by 2 (the uniform rule for the
    two matmuls around softmax) and turns attention dropout off.
    """
    from transformers.modeling_utils import AttentionInterface

    wrap: Callable = load_lxt().wrap_attention_forward
    interface = AttentionInterface()
    for key in list(original):
        interface[key] = wrap(original[key])
    return interface
