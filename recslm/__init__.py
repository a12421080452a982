"""recslm: turn a large recommendation LLM into a small, fast one and ship it.

The package is the library: pure ML and serving logic. Orchestration (Prefect) and
tracking (MLflow) live in the top-level ``tasks`` and ``flows`` packages, which wrap it.
"""

__version__ = "0.2.0"
