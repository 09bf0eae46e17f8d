"""Compressed sensing: measurement operators and recovery baselines."""
