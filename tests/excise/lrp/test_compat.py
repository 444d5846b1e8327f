"""lxt 2.1 on transformers 5: importable, attention rules through an AttentionInterface."""

from __future__ import annotations

import transformers.pytorch_utils as pytorch_utils
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from excise.lrp.compat import load_lxt, lxt_attention_interface


def test_lxt_imports_on_transformers_5():
    patches = load_lxt()
    assert callable(patches.rms_norm_forward) and callable(patches.wrap_attention_forward)
    # the stand-in for the symbol transformers 5 removed refuses to run instead of pretending
    assert hasattr(pytorch_utils, "find_pruneable_heads_and_indices")
    try:
        pytorch_utils.find_pruneable_heads_and_indices([0], 2, 4, set())
    except NotImplementedError:
        pass
    else:
        raise AssertionError("the stand-in must refuse to run")


def test_attention_interface_wraps_every_function_and_leaves_the_global_one_alone():
    interface = lxt_attention_interface(ALL_ATTENTION_FUNCTIONS)
    assert isinstance(interface, AttentionInterface)
    assert set(interface) == set(ALL_ATTENTION_FUNCTIONS)
    for key in ALL_ATTENTION_FUNCTIONS:
        assert interface[key] is not ALL_ATTENTION_FUNCTIONS[key]
        assert interface[key].__module__ == "lxt.efficient.patches"
    # transformers 5 calls get_interface on it (lxt's plain dict broke exactly here)
    assert interface.get_interface("sdpa", None) is interface["sdpa"]
    assert ALL_ATTENTION_FUNCTIONS["sdpa"].__module__.startswith("transformers")
