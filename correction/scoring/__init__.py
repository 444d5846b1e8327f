"""Scorers: relevance of weights, neurons and heads over reference data."""
