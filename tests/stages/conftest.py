"""Stage-level tests: one stage's library body on tiny models and data (training, scoring, quantizing, serving)."""
