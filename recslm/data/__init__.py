"""Data: ranking records, prompt featurization, MovieLens tasks, tokenizers."""
