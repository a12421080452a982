"""Evaluation: prefix-shared scoring, AUC per task, validation loss, latency profile."""
