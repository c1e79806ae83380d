"""Training job: data sources, the training loop, evaluation and the CLI that writes versions."""
