"""Prefect tasks: thin wrappers that call recslm, store artifacts and log to MLflow."""
