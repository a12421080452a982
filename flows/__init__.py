"""Prefect flows that compose recslm's tasks into pipelines."""
