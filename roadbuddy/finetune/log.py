"""Fine-tuning's log: training_log.jsonl (a line per step and per validation) and its chart, training.png."""
from __future__ import annotations

import json
from pathlib import Path

from roadbuddy.data.atomic import atomic_write_text

LOG_NAME, CHART_NAME = "training_log.jsonl", "training.png"


def append(path: Path, entry: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def truncate(path: Path, step: int) -> None:
    """Drop the log lines of steps after the checkpoint (a killed run did them; the rerun does them again)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and line_step(line) is not None and line_step(line) <= step]
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def line_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def entries(log_path: Path) -> tuple[list[dict], list[dict]]:
    """The log's step lines (with a loss) and validation lines, in order; none when there is no log yet."""
    lines = [json.loads(x) for x in log_path.read_text(encoding="utf-8").splitlines() if x.strip()] \
        if log_path.is_file() else []
    return [e for e in lines if "loss" in e], [e for e in lines if "validation" in e]


def figure():
    """A new chart's figure and axes, drawn off screen (matplotlib's Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 3.5))


def save(fig, png: Path) -> None:
    """Write the chart whole (a temporary file renamed) and free the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = png.with_name(png.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(png)


def plot(log_path: Path, png: Path) -> None:
    """training.png: the loss per step and the validation accuracy."""
    steps, vals = entries(log_path)
    fig, ax = figure()
    if steps:
        ax.plot([e["step"] for e in steps], [e["loss"] for e in steps], color="tab:blue", lw=1, label="loss")
        if all("letter_loss" in e for e in steps):
            ax.plot([e["step"] for e in steps], [e["letter_loss"] for e in steps], color="tab:green", lw=1,
                    label="its answer-letter part")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean per question)")
    if vals:
        ax2 = ax.twinx()
        ax2.plot([e["step"] for e in vals], [e["validation"]["accuracy"] for e in vals], "o-", color="tab:orange",
                 label="validation accuracy")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("validation accuracy")
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    ax.set_title("roadbuddy-finetune")
    save(fig, png)
