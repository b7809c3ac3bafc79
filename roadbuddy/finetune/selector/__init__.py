"""roadbuddy-finetune-selector: the frame selector (roadbuddy.selector) fine-tuned on train.json's support frames.

    config.py  SelectorConfig: the trainer's flags, declared once
    data.py    training data: questions with support times, cached scans, labels by window, steps
    train.py   the recipe (sigmoid loss, AdamW, checkpoint/resume, validation)
    hits.py    hit@k of the selector's picks against evenly spread frames (validation and the evals)
    cli.py     the command
"""
