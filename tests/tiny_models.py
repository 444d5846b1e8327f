"""Tiny randomly initialised models for fast tests.

A byte-level BPE tokenizer (vocabulary 384) is trained on a few sentences so the
models stay tiny and nothing depends on the embedded model; the chat template is
a plain ChatML one so chat endpoints work on these models too.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    OPTConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

VOCAB_SIZE = 384
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_TRAINING_TEXT = [
    "When Mary and John went to the store, John gave a drink to Mary.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Language models predict the next token from the tokens before it.",
    "Pruning removes weights that matter little for the task at hand.",
    "Relevance flows backwards from the output logit to every weight.",
    "A small model is fast to test; a large model is slow to load.",
    "0123456789 ,.;:!?'\"()[]{}-_/ abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]


def build_tokenizer(out: Path) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TRAINING_TEXT * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def _save(config, out: Path, seed: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out)
    config.vocab_size = VOCAB_SIZE
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    return out


def _llama(out: Path, seed: int, *, hidden: int, mlp: int, head_dim: int) -> Path:
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
    )
    return _save(config, out, seed)


def build_tiny_llama(out: Path, seed: int = 0) -> Path:
    return _llama(out, seed, hidden=64, mlp=128, head_dim=16)


def build_tiny_llama_vllm(out: Path, seed: int = 0) -> Path:
    """A tiny Llama that vLLM's CPU attention runs (it needs head sizes of 32 and up), MLP width 256."""
    return _llama(out, seed, hidden=128, mlp=256, head_dim=32)


def build_tiny_qwen2(out: Path, seed: int = 0) -> Path:
    config = Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    return _save(config, out, seed)


def build_tiny_opt(out: Path, seed: int = 0) -> Path:
    config = OPTConfig(
        hidden_size=64,
        ffn_dim=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        word_embed_proj_dim=64,
        max_position_embeddings=512,
        do_layer_norm_before=True,
        dropout=0.0,
    )
    return _save(config, out, seed)
