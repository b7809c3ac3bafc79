"""roadbuddy-finetune: LoRA / QLoRA on a labeled split through predict's own inputs."""
