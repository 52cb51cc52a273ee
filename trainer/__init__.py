"""The locked apparatus: data preparation, tokenizer, dataloader, metric, profiles and the runner."""
from pathlib import Path


def baseline_path() -> Path:
    """The baseline train.py that seeds every research repo (installed package data)."""
    return Path(__file__).parent / "baseline" / "train.py"
