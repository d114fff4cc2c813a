"""Masks, magnitude pruning and the strategy table."""
