from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COCO_MINI = REPO.parent / "shared" / "data" / "coco-mini"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for a module of tiny tensors (``pytestmark = pytest.mark.usefixtures(
    "single_thread")``): thread start-up would dominate, and stall on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    """The real COCO 2017 subset beside the repository; tests using it skip when it is absent."""
    if not (COCO_MINI / "annotations").is_dir():
        pytest.skip(f"{COCO_MINI} is not present")
    return COCO_MINI


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """A tiny synthetic COCO-format dataset (12 train, 4 val images) for end-to-end stage runs."""
    from posenet.data.synthetic import write_synthetic_coco

    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_coco(root, num_train=12, num_val=4, seed=3, workers=1, progress=False)
    return root
