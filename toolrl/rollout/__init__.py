"""Rollout: engines that turn token ids into token ids, and the agent loop that drives them."""
