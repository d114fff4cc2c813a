"""Iterative magnitude pruning: the driver that prunes, evaluates the baseline, trains and records each level."""
