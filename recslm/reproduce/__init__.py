"""``recslm reproduce``: the paper's findings re-measured on this pipeline, with intervals and verdicts."""
