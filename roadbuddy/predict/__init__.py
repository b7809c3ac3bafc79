"""Answering a question file: inputs (CPU side), answering (model side), the run loop, its CLI."""
