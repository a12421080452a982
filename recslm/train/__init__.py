"""Training: supervised fine-tuning of the teacher (knowledge distillation comes next)."""
