"""Non-LM reference models on decision-time features: what an LM ranker must beat to earn its cost."""
