"""GNOLR (methods.md §1): config · network · loss · Lightning module · fit."""
