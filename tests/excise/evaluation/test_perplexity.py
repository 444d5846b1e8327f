import math
from types import SimpleNamespace

import pytest
import torch

from excise.data.windows import token_windows
from excise.evaluation.perplexity import default_evaluation_spec, perplexity
from excise.models.loading import load_model


class UniformLogits(torch.nn.Module):
    """Every next token equally likely: perplexity must equal the vocabulary size."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab) + self.anchor)


def test_uniform_model_has_perplexity_of_vocabulary_size():
    windows = torch.randint(0, 1000, (5, 17))
    result = perplexity(UniformLogits(1000), windows, batch_size=2, progress=False)
    assert result.perplexity == pytest.approx(1000, rel=1e-9)
    assert result.predictions == 5 * 16


def test_matches_float64_reference(tiny_opt_dir):
    loaded = load_model(tiny_opt_dir)
    windows = torch.randint(0, loaded.model.config.vocab_size, (3, 20), generator=torch.Generator().manual_seed(0))
    result = perplexity(loaded.model, windows, batch_size=2, progress=False)
    with torch.no_grad():
        log_probs = loaded.model(input_ids=windows).logits.double().log_softmax(-1)[:, :-1]
    nll = -log_probs.gather(-1, windows[:, 1:, None]).mean().item()
    assert result.perplexity == pytest.approx(math.exp(nll), rel=1e-5)


@pytest.mark.slow
def test_smollm2_is_really_pretrained(smollm2):
    windows = token_windows(smollm2.tokenizer, default_evaluation_spec(count=8, length=256))
    assert perplexity(smollm2.model, windows, progress=False).perplexity < 40


IOI_PROMPTS = [
    ("When Mary and John went to the store, John gave a drink to", " Mary", " John"),
    ("When John and Mary went to the store, Mary gave a drink to", " John", " Mary"),
    ("After Alice and Bob went to the park, Bob handed a ball to", " Alice", " Bob"),
    ("After Bob and Alice went to the park, Alice handed a ball to", " Bob", " Alice"),
    ("While Sarah and Tom were at the office, Tom sent an email to", " Sarah", " Tom"),
    ("While Tom and Sarah were at the office, Sarah sent an email to", " Tom", " Sarah"),
]


@pytest.mark.slow
@torch.no_grad()
def test_smollm2_prefers_the_indirect_object(smollm2):
    tokenizer, model = smollm2.tokenizer, smollm2.model
    differences = []
    for prompt, correct, wrong in IOI_PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        logits = model(input_ids=ids).logits[0, -1]
        correct_id, wrong_id = (tokenizer(t, add_special_tokens=False).input_ids[0] for t in (correct, wrong))
        differences.append((logits[correct_id] - logits[wrong_id]).item())
    assert all(d > 0 for d in differences), differences
    assert differences[0] > 3
