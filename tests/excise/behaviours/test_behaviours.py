import hashlib
import json
from pathlib import Path

import pytest
import torch

from excise.behaviours import BEHAVIOURS, get_behaviour, text_batches
from excise.behaviours.base import EvaluationSettings
from excise.errors import ExciseError
from excise.evaluation.generation import TransformersGenerator
import excise.reference_data
from excise.models.loading import load_model


def test_registry_knows_toxicity_and_repetition():
    assert set(BEHAVIOURS) == {"toxicity", "repetition"}
    with pytest.raises(ExciseError, match="no reference set"):
        get_behaviour("sarcasm")


def _file_splits() -> dict[str, list[str]]:
    """The committed prompt file read directly, split by the documented rule written out here:
    first SHA-256 byte < 96 reference, < 144 validation, else test."""
    path = Path(excise.reference_data.__file__).parent / "toxic_prompts.jsonl"
    splits: dict[str, list[str]] = {"reference": [], "validation": [], "test": []}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            text = json.loads(line)["text"]
            first = hashlib.sha256(text.encode()).digest()[0]
            splits["reference" if first < 96 else "validation" if first < 144 else "test"].append(text)
    return splits


def test_prompts_come_from_the_right_half():
    behaviour = get_behaviour("toxicity")
    splits = _file_splits()
    assert behaviour.prompts("test") == splits["test"]
    assert behaviour.prompts("validation") == splits["validation"]
    assert behaviour.prompts("reference", 5) == splits["reference"][:5]
    assert not set(behaviour.prompts("test")) & set(behaviour.prompts("reference"))


def test_text_batches_pad_right_and_cut(tiny_llama_dir):
    tokenizer = load_model(tiny_llama_dir).tokenizer
    texts = ["a b c d e f g h", "a b", "c"]
    batches = text_batches(tokenizer, texts, batch_size=2, max_length=4)
    assert [len(b) for b in batches] == [2, 1]
    first = batches[0]
    ids = [tokenizer.encode(t, add_special_tokens=False)[:4] for t in texts]
    assert first.attention_mask.sum(1).tolist() == [len(ids[0]), len(ids[1])]
    assert first.input_ids[0, : len(ids[0])].tolist() == ids[0]
    assert first.input_ids[1, : len(ids[1])].tolist() == ids[1]
    assert first.input_ids.dtype == torch.long


def test_toxicity_with_a_harmless_model_has_nothing_to_correct(tiny_llama_dir):
    loaded = load_model(tiny_llama_dir)
    generator = TransformersGenerator(loaded.model, loaded.tokenizer, progress=False)
    behaviour = get_behaviour("toxicity")
    with pytest.raises(ExciseError, match="nothing to correct"):
        behaviour.undesired_texts(generator, behaviour.prompts("reference", 3), EvaluationSettings(samples=2))


def test_toxicity_onsets_cut_each_text_at_the_word_that_first_turns_it_toxic():
    from excise.behaviours.base import UndesiredText
    from excise.evaluation.toxicity import TOXICITY_SCORERS

    class InsultScorer:  # rates a text toxic once it contains "idiot"
        def predict(self, texts):
            return [0.9 if "idiot" in text else 0.1 for text in texts]

    TOXICITY_SCORERS.add("insult-for-test", InsultScorer)
    try:
        texts = [UndesiredText("He said", " you are an idiot, and then left"),  # the words after it are dropped
                 UndesiredText("He said", " idiot!"),  # the first word: no context added
                 UndesiredText("He said", " nice  words"),  # never crosses: the last word
                 UndesiredText("He said", "  ")]  # no word at all: kept
        onsets = get_behaviour("toxicity").onsets(texts, EvaluationSettings(toxicity_scorer="insult-for-test"))
    finally:
        del TOXICITY_SCORERS["insult-for-test"]
    assert onsets == [UndesiredText("He said you are an", " idiot,"), UndesiredText("He said", " idiot!"),
                      UndesiredText("He said nice", "  words"), UndesiredText("He said", "  ")]
    assert get_behaviour("toxicity").finds_onsets and not get_behaviour("repetition").finds_onsets
