"""Training one network or K together (stacks), the optimizer, flat parameters, evaluation."""
