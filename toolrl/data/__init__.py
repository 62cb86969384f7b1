"""Datasets: loaders and schema adapters (Open-AgentRL / verl parquet and jsonl)."""
