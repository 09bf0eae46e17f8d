"""Experiments, run as ``python -m experiments.<name>``."""
