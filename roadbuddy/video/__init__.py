"""Clips: the decoders (PyAV, decord) and the frame plans."""
