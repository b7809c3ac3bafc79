"""Test material: tiny checkpoints, synthetic clips, the tiny task, the card's reference code."""
