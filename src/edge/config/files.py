"""Input files named in edge.yaml must be there when it is loaded.

Keys, certificates, CA bundles, JWKS and rules files are read when the
gateway starts; checking them here, with the rest of the configuration, makes
`edge check` (and a reload) report a missing or unreadable one as
`file: dotted.key: expectation` instead of the gateway failing at start.
Only presence and readability are checked: the parts that read a file still
say what is wrong with its content.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edge.config.gateway import EdgeConfig

CHECKED_ELSEWHERE = frozenset({"routes_file", "audit.signing_key"})  # and `policy.*`: `check_policy`
FOLDER_OR_FILE = frozenset({"protos"})


def check_input_files(config: EdgeConfig, config_path: Path) -> list[str]:
    problems = []
    for key, path in _paths(config, ""):
        if key in CHECKED_ELSEWHERE or key.startswith("policy.") or _is_output(key):
            continue
        if key in FOLDER_OR_FILE:
            if not path.exists():
                problems.append(
                    f"{config_path}: {key}: expected a folder of .proto files or a descriptor set (no {path})"
                )
        elif not path.is_file():
            problems.append(f"{config_path}: {key}: expected a readable file (no file {path})")
        elif not os.access(path, os.R_OK):
            problems.append(f"{config_path}: {key}: expected a readable file ({path} cannot be read)")
    return problems


def _is_output(key: str) -> bool:
    """What the gateway writes: audit files and the spool folder."""
    return key == "audit.spool.path" or (key.startswith("audit.sinks[") and key.endswith("].path"))


def _paths(value: Any, key: str) -> Iterator[tuple[str, Path]]:
    if isinstance(value, Path):
        yield key, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _paths(getattr(value, name), f"{key}.{name}" if key else name)
    elif isinstance(value, tuple | list):
        for index, item in enumerate(value):
            yield from _paths(item, f"{key}[{index}]")
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _paths(item, f"{key}.{name}")
