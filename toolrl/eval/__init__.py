"""Evaluation: metrics (avg@k, unbiased pass@k, maj@k, verl's bootstrap, CIs), benchmark
loaders with the paper's prompts, and the runner behind `toolrl eval` and the trainer's
validation (`runner.evaluate`)."""
