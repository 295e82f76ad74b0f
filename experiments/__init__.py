"""Commands a researcher runs on top of the pipeline: comparisons, the closed loop, unbiased learning."""
