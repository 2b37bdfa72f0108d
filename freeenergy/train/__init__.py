"""Training: the composed step, checkpoints, the driver loop and summaries."""
