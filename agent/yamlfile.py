"""Reading a YAML configuration file: the one place that turns YAML errors into ValueError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_yaml(path: str | Path) -> Any:
    """Parse a UTF-8 YAML file; a syntax error becomes a ValueError naming the file."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
