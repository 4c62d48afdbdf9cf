"""Offline answer-quality evaluation (built in a later issue)."""
