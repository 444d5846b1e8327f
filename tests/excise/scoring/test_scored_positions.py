"""Undesired texts are explained from their continuation only: the `scored` mask of a batch."""

import torch

from excise.behaviours import UndesiredText, undesired_batches
from excise.models.loading import load_model
from excise.scoring import score_model
from excise.scoring.batches import ReferenceBatch
from excise.scoring.targets import get_target


def test_undesired_batches_mark_the_continuation_tokens(tiny_llama_dir):
    tokenizer = load_model(tiny_llama_dir).tokenizer
    texts = [UndesiredText("a b c", " d e"), UndesiredText("a", " b c d e f")]
    batch = undesired_batches(tokenizer, texts, batch_size=2, max_length=32)[0]
    for row, text in enumerate(texts):
        prompt = tokenizer.encode(text.prompt, add_special_tokens=False)
        continuation = tokenizer.encode(text.continuation, add_special_tokens=False)
        length = len(prompt) + len(continuation)
        assert batch.input_ids[row, :length].tolist() == prompt + continuation
        assert batch.scored[row].tolist() == [0] * len(prompt) + [1] * len(continuation) + [0] * (batch.scored.shape[1] - length)


def test_next_token_objective_sums_only_predictions_of_scored_tokens():
    logits = torch.arange(2 * 4 * 5, dtype=torch.float64).view(2, 4, 5)  # [B, T, V]
    ids = torch.tensor([[1, 2, 3, 4], [0, 1, 2, 0]])
    batch = ReferenceBatch(ids, torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]), scored=torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]]))
    # row 0: positions 1 and 2 predict the scored tokens 3 and 4; row 1: positions 0 and 1 predict 1 and 2
    expected = [logits[0, 1, 3] + logits[0, 2, 4], logits[1, 0, 1] + logits[1, 1, 2]]
    assert get_target("next_token").objective(logits, batch).tolist() == [float(e) for e in expected]


def test_next_token_margin_is_the_logit_minus_its_expectation_with_the_log_probability_gradient():
    # one position, three tokens, logits (0, ln 2, ln 5): p = (1/8, 2/8, 5/8), next token 1
    logits = torch.zeros(1, 2, 3, dtype=torch.float64)
    logits[0, 0] = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64).log()
    logits.requires_grad_()
    batch = ReferenceBatch(torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.long))
    value = get_target("next_token_margin").objective(logits, batch)
    ln2, ln5 = torch.tensor(2.0, dtype=torch.float64).log(), torch.tensor(5.0, dtype=torch.float64).log()
    torch.testing.assert_close(value, (ln2 - (2 * ln2 + 5 * ln5) / 8)[None])
    value.sum().backward()
    # d/dz of log p(token 1) = onehot - p
    torch.testing.assert_close(logits.grad[0, 0], torch.tensor([-1 / 8, 1 - 2 / 8, -5 / 8], dtype=torch.float64))
    assert logits.grad[0, 1].abs().sum() == 0  # the last position predicts nothing


def test_scorers_ignore_the_prompt_of_an_undesired_text(tiny_llama_dir):
    loaded = load_model(tiny_llama_dir)
    ids = torch.tensor([[5, 9, 2, 7, 3, 8]])
    scored = torch.tensor([[0, 0, 0, 1, 1, 1]])
    with_prompt = [ReferenceBatch(ids, torch.ones_like(ids), scored=scored)]
    everything = [ReferenceBatch(ids, torch.ones_like(ids))]
    for method in ("lrp", "gradient", "wanda", "activation"):
        masked = score_model(loaded.model, with_prompt, method, granularities={"neuron"}, progress=False).scores
        full = score_model(loaded.model, everything, method, granularities={"neuron"}, progress=False).scores
        assert not torch.allclose(masked.neurons[0], full.neurons[0]), method
    # activation: the mean |activation| over the three scored positions, computed by hand
    captured = {}
    handle = loaded.model.model.layers[0].mlp.down_proj.register_forward_pre_hook(
        lambda m, args: captured.__setitem__("x", args[0].double()))
    with torch.no_grad():
        loaded.model(input_ids=ids)
    handle.remove()
    expected = captured["x"][0, 3:].abs().mean(0)
    activation = score_model(loaded.model, with_prompt, "activation", granularities={"neuron"}, progress=False).scores
    assert torch.allclose(activation.neurons[0].double(), expected, atol=1e-6)
