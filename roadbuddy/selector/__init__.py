"""The frame selector: a SigLIP model that scores how relevant each frame of a clip is to a question.

train.json says when each question's evidence is on screen (support_frames); the test files do not. A
selector fine-tuned on those timestamps (roadbuddy-finetune-selector) predicts them for any question:

    model.py   load a SigLIP / SigLIP 2 checkpoint; score(selector, questions, frames) -> [Q, F] logits
    times.py   the scan's frames and times; predicted support times (peaks apart); hits
    scan.py    a clip's scan, decoded once through roadbuddy.video's reader at the selector's input size;
               predict_support(selector, reader, questions, scan_fps=...): what prediction asks of a clip
    data.py    training data: questions with support times, cached scans, labels by window, steps
    hits.py    hit@k of the selector's picks against evenly spread frames
    config.py  SelectorConfig: the trainer's flags;  train.py  the recipe;  cli.py  the command
    tiny.py    a tiny random SigLIP checkpoint built from a config (tests, the tiny task)
"""
