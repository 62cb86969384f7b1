"""toolrl: train language models to reason with tools by reinforcement learning.

Implements the system of *Demystifying Reinforcement Learning in Agentic Reasoning*
(arXiv 2510.11701): cold-start SFT on real tool-use trajectories, agentic RL with GRPO-TCR and a
sandboxed code interpreter, and avg@k / pass@k / maj@k evaluation.
"""

__version__ = "0.1.0"
