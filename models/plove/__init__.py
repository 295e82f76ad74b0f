"""P[Love], a calibrated reward model of the love reaction (methods.md §3).

config · network · calibration · Lightning module · fit.
"""
