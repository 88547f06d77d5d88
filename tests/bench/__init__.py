"""Benchmarks (`make bench`, `python -m tests.bench`): not collected by pytest; figures as ratios to baselines."""
