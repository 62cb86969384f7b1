"""Model builders: the embedded tiny tokenizer and Qwen3 model."""
