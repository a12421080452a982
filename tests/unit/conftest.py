"""Unit tests: one algorithm or rule at a time, on synthetic inputs (seconds each)."""
