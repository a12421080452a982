"""Data: ranking records, prompt featurization, MovieLens tasks, tokenizers.

Nothing is imported here on purpose: ``import recslm.data.records`` must stay cheap for
the CLI and the Prefect tasks, which load pandas or tokenizers only when a stage runs.
"""
