"""Trainers: SFT (sft.py) and GRPO-TCR RL (rl.py), readable loops over shared parts.

Shared parts, each one small: `batching` (trajectories/conversations → padded tensors, per-token
log-probs), `optim` (AdamW + schedules), `checkpoint` (atomic, resumable), `logging`
(metrics.jsonl, console, TensorBoard, W&B), `model_io` (loading a local model, LoRA).
"""
