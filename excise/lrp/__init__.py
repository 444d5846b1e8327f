"""LRP through lxt (LRP eXplains Transformers) 2.1 on the transformers version excise pins.

`compat` makes lxt importable on transformers 5 and gives its attention rule an
`AttentionInterface`; `patching` applies a model family's AttnLRP rules (listed by its
adapter's `lrp_patches()`) for the duration of a `with` block and undoes them afterwards.
"""

from excise.lrp.compat import load_lxt
from excise.lrp.patching import Patch, lrp_patched

__all__ = ["Patch", "load_lxt", "lrp_patched"]
