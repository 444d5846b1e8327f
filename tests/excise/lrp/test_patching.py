"""AttnLRP patches: same forward values, different gradients inside, everything restored after."""

from __future__ import annotations

import copy

import pytest
import torch

from excise.lrp import lrp_patched
from excise.models.adapters import get_adapter
from excise.models.loading import load_model


@pytest.fixture(scope="module", params=["llama", "opt"])
def tiny(request):
    return load_model(request.getfixturevalue(f"tiny_{request.param}_dir")).model


def _logits_and_input_gradient(model, ids):
    embeddings = model.get_input_embeddings()(ids).detach().requires_grad_()
    logits = model(inputs_embeds=embeddings).logits
    logits[:, :-1].gather(-1, ids[:, 1:, None]).sum().backward()
    return logits.detach(), embeddings.grad


def _patched_state(model):
    adapter = get_adapter(model)
    return [(p.owner, p.attribute, vars(p.owner).get(p.attribute)) for p in adapter.lrp_patches()]


def test_patched_forward_is_identical_and_gradients_follow_the_rules(tiny):
    ids = torch.randint(0, tiny.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    before = _patched_state(tiny)
    plain_logits, plain_grad = _logits_and_input_gradient(tiny, ids)
    with lrp_patched(get_adapter(tiny)):
        lrp_logits, lrp_grad = _logits_and_input_gradient(tiny, ids)
        with pytest.raises(RuntimeError, match="re-entrant"), lrp_patched(get_adapter(tiny)):
            pass
    after_logits, after_grad = _logits_and_input_gradient(tiny, ids)
    torch.testing.assert_close(lrp_logits, plain_logits, rtol=0, atol=1e-5)
    # the rules change the backward pass (q/k/v and gate*up gradients are rescaled) ...
    assert not torch.allclose(lrp_grad, plain_grad, rtol=1e-3, atol=1e-6)
    # ... and leaving the block restores the plain model exactly
    torch.testing.assert_close(after_logits, plain_logits, rtol=0, atol=0)
    torch.testing.assert_close(after_grad, plain_grad, rtol=0, atol=0)
    assert _patched_state(tiny) == before


@pytest.mark.slow
def test_smollm2_patched_logits_are_identical(smollm2_dir):
    model = load_model(smollm2_dir).model
    ids = torch.randint(0, model.config.vocab_size, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(ids).logits
        with lrp_patched(get_adapter(model)):
            patched = model(ids).logits
    torch.testing.assert_close(patched, plain, rtol=0, atol=1e-4)


def test_modules_hooked_by_accelerate_dispatch_get_the_rules_too(tiny_llama_dir):
    """A device_map load hooks modules with accelerate, which binds their forward up front."""
    from accelerate.hooks import ModelHook, add_hook_to_module

    plain = load_model(tiny_llama_dir).model
    hooked = copy.deepcopy(plain)
    for module in (hooked.model.norm, hooked.model.layers[0].mlp):
        add_hook_to_module(module, ModelHook())
    ids = torch.randint(0, plain.config.vocab_size, (1, 10), generator=torch.Generator().manual_seed(1))
    with lrp_patched(get_adapter(plain)):
        _, expected = _logits_and_input_gradient(plain, ids)
    bound = hooked.model.norm._old_forward
    with lrp_patched(get_adapter(hooked)):
        _, got = _logits_and_input_gradient(hooked, ids)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    assert hooked.model.norm._old_forward == bound
