"""Benchmarks: each script measures ours beside a baseline in the same run (see run_all)."""
