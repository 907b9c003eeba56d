"""The documentation's generated blocks and links: every block the code writes has exactly one
home in README.md + docs/*.md, every marker is closed, the update function refuses zero or two
homes, and every relative link between the pages resolves. No torch import: fast."""
import ast
import re
import shutil
from pathlib import Path

import pytest

from posenet.bench.common import (
    GENERATED_BLOCKS,
    GeneratedBlockError,
    block_markers,
    documentation_files,
    find_generated_block,
    update_generated_block,
)

REPO = Path(__file__).resolve().parents[1]
BEGIN = re.compile(r"<!-- benchmark:([a-z0-9-]+) -->")
END = re.compile(r"<!-- /benchmark:([a-z0-9-]+) -->")


def _pages():
    return documentation_files(REPO)


def test_the_documentation_files_are_the_readme_and_the_docs_pages():
    names = {p.relative_to(REPO).as_posix() for p in _pages()}
    assert "README.md" in names and "docs/design.md" in names and "docs/benchmarks.md" in names


def _names_the_scripts_write():
    """Block names the scripts can write: every benchmark subcommand with --update-readme (its
    name is the default block), every explicit ``section="..."``, the CUDA NMS block, and the
    quickstart of each model family."""
    source = (REPO / "scripts" / "benchmark.py").read_text()
    tree = ast.parse(source)
    subcommands = {node.args[0].value for node in ast.walk(tree)
                   if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_parser"
                   and node.args and isinstance(node.args[0], ast.Constant)}
    sections = set(re.findall(r'section="([a-z0-9-]+)"', source))
    assert 'f"nms-{device_type}"' in source  # `nms --device cuda` writes its own block
    # each family's quickstart, overfit and decode tables have their blocks (``Family.block``): the
    # bare name for MultiPoseNet, "<kind>-openpose" for the OpenPose family
    assert 'family.block("overfit")' in source and 'family.block("decode")' in source
    assert 'family.block("quickstart")' in (REPO / "scripts" / "demo.py").read_text()
    families = (REPO / "posenet" / "families.py").read_text()
    assert 'return f"{kind}-{self.name}"' in families and "return kind  # the first family's" in families
    per_family = {f"{kind}{suffix}" for kind in ("quickstart", "overfit", "decode") for suffix in ("", "-openpose")}
    return subcommands | sections | {"nms-cuda"} | per_family


def test_every_block_the_scripts_write_is_listed():
    missing = _names_the_scripts_write() - set(GENERATED_BLOCKS)
    assert not missing, f"blocks written by the scripts but not in GENERATED_BLOCKS: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(GENERATED_BLOCKS))
def test_every_generated_block_has_exactly_one_home(name):
    home = find_generated_block(name, REPO)
    begin, end = block_markers(name)
    text = home.read_text()
    assert text.count(begin) == 1 and text.count(end) == 1 and text.index(begin) < text.index(end)


def test_every_marker_is_closed_and_names_a_known_block():
    for page in _pages():
        text = page.read_text()
        begins, ends = BEGIN.findall(text), END.findall(text)
        assert sorted(begins) == sorted(ends), f"{page}: unclosed markers {set(begins) ^ set(ends)}"
        unknown = set(begins) - set(GENERATED_BLOCKS)
        assert not unknown, f"{page}: blocks not in GENERATED_BLOCKS: {sorted(unknown)}"
        for name in begins:
            begin, end = block_markers(name)
            assert text.index(begin) < text.index(end), f"{page}: {end} before {begin}"


def _copy_docs(tmp_path):
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    return tmp_path


def test_the_update_rewrites_the_one_home_and_nothing_else(tmp_path):
    root = _copy_docs(tmp_path)
    home = find_generated_block("nms", root)
    before = {p: p.read_text() for p in documentation_files(root)}
    written = update_generated_block("nms", f"### NMS benchmark\n\nread from {root.parent}/shared/data\n", root=root)
    assert written == home
    text = home.read_text()
    begin, end = block_markers("nms")
    assert f"{begin}\n### NMS benchmark\n\nread from ../shared/data\n{end}" in text  # no machine paths
    assert text.split(begin)[0] == before[home].split(begin)[0]
    assert text.split(end)[1] == before[home].split(end)[1]
    assert all(p.read_text() == t for p, t in before.items() if p != home)
    assert not list(home.parent.glob(".*.tmp"))  # written atomically, nothing left over


def test_the_update_refuses_a_block_without_a_home_or_with_two(tmp_path):
    root = _copy_docs(tmp_path)
    with pytest.raises(GeneratedBlockError, match="generated block 'no-such-table': no "):
        update_generated_block("no-such-table", "x", root=root)
    begin, end = block_markers("decode")
    readme = root / "README.md"
    readme.write_text(readme.read_text() + f"\n{begin}\nold\n{end}\n")
    with pytest.raises(GeneratedBlockError, match=r"found in README\.md and docs/benchmarks\.md"):
        update_generated_block("decode", "x", root=root)


def test_the_update_refuses_a_block_without_its_end_marker(tmp_path):
    root = _copy_docs(tmp_path)
    home = find_generated_block("train", root)
    _, end = block_markers("train")
    home.write_text(home.read_text().replace(end, ""))
    with pytest.raises(GeneratedBlockError, match="needs one"):
        update_generated_block("train", "x", root=root)


LINK = re.compile(r"\]\(([^)\s]+)\)|<img src=\"([^\"]+)\"")


def _anchors(page: Path) -> set:
    """GitHub's heading anchors of a page: lower case, punctuation dropped, spaces to hyphens."""
    anchors, in_code = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_every_relative_link_between_the_pages_resolves():
    broken = []
    for page in _pages():
        for match in LINK.finditer(page.read_text()):
            target = match.group(1) or match.group(2)
            if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked here
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_no_page_names_a_path_of_a_particular_machine():
    for page in _pages():
        assert not re.search(r"(?<![\w.])/(work|home|Users)/", page.read_text()), page
