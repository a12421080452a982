"""Models: build from an architecture spec or load a Hugging Face directory; surgery."""
