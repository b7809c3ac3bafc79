"""Qwen3-VL and Qwen2.5-VL: a clip's frames as one video through the checkpoint's own processor, positions
by multimodal rotary embedding (M-RoPE), questions as suffixes from the last prefix position + 1."""
