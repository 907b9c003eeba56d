from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COCO_MINI = REPO.parent / "shared" / "data" / "coco-mini"


# The modules that take longest (a minute or more of the default suite each, measured with
# --durations), collected first: make test hands whole modules to its two processes in
# collection order, and a long module handed out last would leave one process idle at the end.
LONGEST_FIRST = ("test_benchmarks_learning.py", "test_engine.py", "test_export_onnx.py", "test_keypoint_stage.py",
                 "test_nms.py", "test_keypoint_model.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


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
