"""Models: the embedded default, loading and validation, and per-family adapters."""
