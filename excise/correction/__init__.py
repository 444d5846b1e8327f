"""Targeted correction: find and cut the components behind an unwanted behaviour."""
