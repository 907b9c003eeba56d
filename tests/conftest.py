from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COCO_MINI = REPO.parent / "shared" / "data" / "coco-mini"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    """The real COCO 2017 subset beside the repository; tests using it skip when it is absent."""
    if not (COCO_MINI / "annotations").is_dir():
        pytest.skip(f"{COCO_MINI} is not present")
    return COCO_MINI
