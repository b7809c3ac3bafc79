"""InternVL (transformers native): loading, tiles, prompts, encoding, answering."""
