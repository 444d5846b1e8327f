"""Pruning: score, select, optionally reconstruct, save a mask artifact."""
