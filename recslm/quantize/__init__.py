"""Post-training quantization of the selected student (paper §6.2, Appendix B.1).

``grid`` and ``quantease`` are pure torch: the quantization grid of one linear layer and the
QuantEase coordinate descent over it. ``modifier`` plugs QuantEase into llm-compressor's
calibration pipeline, ``recipes`` builds the llm-compressor recipes of each scheme, and
``stage`` is the quantize stage (a student folder in, a compressed-tensors folder out).
Importing this package imports neither llm-compressor nor transformers.
"""
