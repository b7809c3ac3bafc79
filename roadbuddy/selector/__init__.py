"""The frame selector: a SigLIP model that scores how relevant each frame of a clip is to a question.

train.json says when each question's evidence is on screen (support_frames); the test files do not. A
selector fine-tuned on those timestamps (roadbuddy-finetune-selector, roadbuddy.finetune.selector) predicts
them for any question; roadbuddy-predict --frame-selector asks it per clip (roadbuddy.predict.inputs):

    model.py   check and load a SigLIP / SigLIP 2 checkpoint; score(selector, questions, frames) -> [Q, F] logits
    times.py   the scan's frames and times; predicted support times (peaks apart, centred); hits
    scan.py    a clip's scan, decoded through roadbuddy.video's reader at the selector's input size;
               predict_support(selector, reader, questions, scan_fps=...): what prediction asks of a clip
    tiny.py    a tiny random SigLIP checkpoint built from a config (tests, the tiny task)
"""
