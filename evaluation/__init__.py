"""Metrics, off-policy estimators and the evaluation protocol: how good is a ranking, offline."""
