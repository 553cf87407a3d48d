"""Putting new plans in force without losing a tunnel: health gates, canary batches,
pair-aware staging, the staged apply and what is in force on the agents."""
