"""Shared test settings: offline, deterministic, CPU, few threads."""

from __future__ import annotations

import json
import os
from pathlib import Path

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "NO_ALBUMENTATIONS_UPDATE": "1",
}.items():
    os.environ.setdefault(_key, _value)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # 2 threads oversubscribe a shared 2-core machine (measured: 2.2 s vs 76 s for one test)

MANIFEST_DIR = Path(__file__).parent / "fixtures" / "checkpoint-layouts"


@pytest.fixture(scope="session")
def manifest():
    """Load a checkpoint-layout manifest ({key: shape}) by name, e.g. manifest("humansd-v1")."""

    def load(name: str) -> dict[str, list[int]]:
        return json.loads((MANIFEST_DIR / f"{name}.json").read_text())

    return load
