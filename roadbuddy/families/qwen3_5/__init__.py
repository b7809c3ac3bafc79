"""Qwen3.5: Qwen3-VL's processor and positions over a hybrid language model (three Gated-DeltaNet layers with a
recurrent state to every full-attention layer with a KV cache)."""
