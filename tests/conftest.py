"""Shared test fixtures.

Real media (../shared/data, or $L3_REAL_MEDIA) is optional: tests that need it take the
`real_media` fixture and are skipped with a reason when it is absent (a fresh clone has none).
"""
import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]


def real_media_root():
    root = os.environ.get("L3_REAL_MEDIA") or str(REPO.parent / "shared" / "data")
    return pathlib.Path(root)


@pytest.fixture(scope="session")
def real_media():
    """Path of the shared real-media folder; skips the test when it is absent."""
    root = real_media_root()
    if not (root / "README.md").exists():
        pytest.skip(f"real media not found at {root} (set L3_REAL_MEDIA or place ../shared/data)")
    return root
