"""Rel-MF, matrix factorisation with the clipped-IPS loss (methods.md §2).

config · network · loss · Lightning module · fit.
"""
