"""The InternVL model card's preprocessing code, as published: the oracle that tests and benches check against.

From the "Inference with Transformers" section of the InternVL3.5 model card
(https://huggingface.co/OpenGVLab/InternVL3_5-4B, the same code as every InternVL2.5/3/3.5 card):
`get_index`, `find_closest_aspect_ratio`, `dynamic_preprocess` and `build_transform`,
copied as they are (named `card_*` here) so that a test comparing roadbuddy.video.frames or
roadbuddy.families.internvl.tiles with them compares with the card, not with a second copy of our own code.
Two changes, both mechanical: the target-ratio expression inside `dynamic_preprocess` is also
given alone (`card_target_ratios`, the same expression), and torchvision's transform is written
out (`card_transform`: the same PIL resize, then ToTensor's and Normalize's float32 operations in
their order), so nothing here needs torchvision.

Nothing in the pipeline imports this module; tests/ and bench/ do.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def card_get_index(bound, fps, max_frame, first_idx=0, num_segments=32):
    if bound:
        start, end = bound[0], bound[1]
    else:
        start, end = -100000, 100000
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_segments
    frame_indices = np.array([
        int(start_idx + (seg_size / 2) + np.round(seg_size * idx))
        for idx in range(num_segments)
    ])
    return frame_indices


def card_find_closest_aspect_ratio(aspect_ratio, target_ratios, width, height, image_size):
    best_ratio_diff = float("inf")
    best_ratio = (1, 1)
    area = width * height
    for ratio in target_ratios:
        target_aspect_ratio = ratio[0] / ratio[1]
        ratio_diff = abs(aspect_ratio - target_aspect_ratio)
        if ratio_diff < best_ratio_diff:
            best_ratio_diff = ratio_diff
            best_ratio = ratio
        elif ratio_diff == best_ratio_diff:
            if area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
                best_ratio = ratio
    return best_ratio


def card_target_ratios(min_num, max_num):
    """The candidate grids, by the expression `dynamic_preprocess` builds them with."""
    target_ratios = set(
        (i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1) if
        i * j <= max_num and i * j >= min_num)
    target_ratios = sorted(target_ratios, key=lambda x: x[0] * x[1])
    return target_ratios


def card_dynamic_preprocess(image, min_num=1, max_num=12, image_size=448, use_thumbnail=False):
    orig_width, orig_height = image.size
    aspect_ratio = orig_width / orig_height

    # calculate the existing image aspect ratio
    target_ratios = set(
        (i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1) if
        i * j <= max_num and i * j >= min_num)
    target_ratios = sorted(target_ratios, key=lambda x: x[0] * x[1])

    # find the closest aspect ratio to the target
    target_aspect_ratio = card_find_closest_aspect_ratio(
        aspect_ratio, target_ratios, orig_width, orig_height, image_size)

    # calculate the target width and height
    target_width = image_size * target_aspect_ratio[0]
    target_height = image_size * target_aspect_ratio[1]
    blocks = target_aspect_ratio[0] * target_aspect_ratio[1]

    # resize the image
    resized_img = image.resize((target_width, target_height))  # PIL's default filter here is bicubic
    processed_images = []
    for i in range(blocks):
        box = (
            (i % (target_width // image_size)) * image_size,
            (i // (target_width // image_size)) * image_size,
            ((i % (target_width // image_size)) + 1) * image_size,
            ((i // (target_width // image_size)) + 1) * image_size
        )
        # split the image
        split_img = resized_img.crop(box)
        processed_images.append(split_img)
    assert len(processed_images) == blocks
    if use_thumbnail and len(processed_images) != 1:
        thumbnail_img = image.resize((image_size, image_size))
        processed_images.append(thumbnail_img)
    return processed_images


def card_transform(img: Image.Image, input_size: int) -> torch.Tensor:
    """build_transform(input_size)(img) without torchvision: RGB, Resize((S, S), BICUBIC), ToTensor, Normalize.

    ToTensor is uint8 HWC -> CHW, float32, / 255; Normalize is float32 (x - mean) / std per channel,
    with mean and std as float32 tensors: the operations torchvision runs, in its order."""
    img = img.convert("RGB") if img.mode != "RGB" else img
    img = img.resize((input_size, input_size), Image.BICUBIC)
    x = torch.from_numpy(np.array(img, np.uint8, copy=True)).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    mean = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.as_tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return x.sub_(mean).div_(std)
