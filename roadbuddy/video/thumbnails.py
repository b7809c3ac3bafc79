"""Small JPEGs of the frames as decoded for the model, written on the data path and shown by the error page
(evals/html_report.py), so no second decode is needed to show them."""
from __future__ import annotations

import os
import posixpath
from pathlib import Path

import numpy as np

THUMBNAIL_WIDTH = 160


def thumbnail_path(folder: Path, video_rel: str, frame: int) -> Path:
    """Where the thumbnail of decoded frame `frame` of clip `video_rel` lives (written by the families'
    decode, read by evals/html_report.py): FOLDER/<clip key>/<frame as 6 digits>.jpg, the clip key being video_rel
    normalised, with "%" and "/" escaped as "%25" and "%2F" ("train/videos/abc.mp4", frame 12 ->
    FOLDER/train%2Fvideos%2Fabc.mp4/000012.jpg): one flat folder per clip, linked from the page by a
    URL-quoted relative path. The escape can be undone, so two clips never share a folder (a/b.mp4,
    a__b.mp4 and a__b.avi did when "/" became "__" and the suffix was dropped)."""
    rel = posixpath.normpath(video_rel.replace("\\", "/"))
    key = rel.replace("%", "%25").replace("/", "%2F")
    return Path(folder) / key / f"{int(frame):06d}.jpg"


def write_thumbnails(decoded: np.ndarray, frame_order: list[int], video_rel: str, folder: Path) -> None:
    """Small JPEGs of the frames as decoded for the model (so no second decode is needed to show them)."""
    from PIL import Image

    for index, frame in zip(frame_order, decoded):
        path = thumbnail_path(folder, video_rel, index)
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(np.asarray(frame))
        height = max(1, round(image.height * THUMBNAIL_WIDTH / image.width))
        partial = path.with_name(path.name + ".part")  # a killed run leaves no half image under the real name
        image.resize((THUMBNAIL_WIDTH, height), Image.BILINEAR).save(partial, format="JPEG", quality=80)
        os.replace(partial, path)
