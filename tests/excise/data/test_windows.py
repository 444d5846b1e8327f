import pytest
from transformers import AutoTokenizer

from excise.data.windows import DataSpec, token_stream, token_windows
from excise.errors import ExciseError


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def test_parse_spec():
    spec = DataSpec.parse("wiki:16x128", split="calibration", order="random", seed=3)
    assert (spec.source, spec.count, spec.length, spec.seed, spec.split) == ("wiki", 16, 128, 3, "calibration")
    assert DataSpec.parse("news", split="evaluation", order="sequential").count == 64


def test_user_file_spec_uses_the_whole_file(tmp_path):
    spec = DataSpec.parse(f"{tmp_path}/x.txt:2x8", split="evaluation", order="sequential")
    assert spec.split == "all"


def test_sequential_windows_are_the_stream_prefix(tokenizer):
    spec = DataSpec(source="news", split="evaluation", count=3, length=32, order="sequential")
    windows = token_windows(tokenizer, spec)
    assert windows.shape == (3, 32)
    assert windows.flatten().tolist() == token_stream(tokenizer, spec)[: 3 * 32].tolist()


def test_random_windows_are_seeded_and_nested(tokenizer):
    base = dict(source="news", split="calibration", length=32, order="random")
    small = token_windows(tokenizer, DataSpec(count=4, seed=0, **base))
    large = token_windows(tokenizer, DataSpec(count=8, seed=0, **base))
    other = token_windows(tokenizer, DataSpec(count=4, seed=1, **base))
    assert small.equal(large[:4])
    assert not small.equal(other)
    stream = token_stream(tokenizer, DataSpec(count=4, seed=0, **base))
    starts = {tuple(stream[i : i + 32].tolist()) for i in range(0, stream.numel() - 31, 32)}
    assert all(tuple(w.tolist()) in starts for w in small)


def test_too_many_windows_is_a_clear_error(tokenizer):
    with pytest.raises(ExciseError, match="fewer than the 100000 asked for"):
        token_windows(tokenizer, DataSpec(source="news", split="evaluation", count=100000, length=512))


def test_windows_longer_than_context(tokenizer):
    with pytest.raises(ExciseError, match="exceed the model's context of 256"):
        token_windows(tokenizer, DataSpec(length=512), max_length=256)


def test_invalid_counts_are_rejected():
    with pytest.raises(ValueError):
        DataSpec(count=0)
