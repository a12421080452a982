"""Training: answer-token SFT, distillation (ranking and generative), DeepSpeed ZeRO, stored teacher top-k."""
