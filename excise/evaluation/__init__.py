"""Measurements of a model: perplexity, task metrics, toxicity, repetition."""
