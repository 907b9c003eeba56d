"""The OpenPose family's decoding benchmark (``scripts/benchmark.py decode --family openpose``):
its scene of separated people, its record, and the subcommand that prints and files its table.
Timings are checked to exist, never against a limit."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from posenet.bench.paf_decode import (
    benchmark_paf_decode, format_paf_decode_table, grid_shape, recovered_people, separated_people,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_the_scene_puts_each_person_in_a_cell_of_its_own():
    people = separated_people(7, 200, seed=1)
    rows, cols = grid_shape(7)
    assert people.shape == (7, 18, 3) and (people[..., 2] == 2).all() and rows * cols >= 7
    cell = np.array([200 / cols, 200 / rows])
    for i, person in enumerate(people):
        corner = np.array([i % cols, i // cols]) * cell
        assert (person[:, :2] >= corner).all() and (person[:, :2] < corner + cell).all()
    assert np.array_equal(people, separated_people(7, 200, seed=1))  # a function of its arguments


def test_recovered_people_needs_every_part_near_and_counts_each_decoded_person_once():
    truth = separated_people(2, 160)
    assert recovered_people(truth, truth, tolerance=1.0) == 2
    assert recovered_people(truth, truth[[0, 0]], tolerance=1.0) == 1
    shifted = truth.copy()
    shifted[1, 3, 0] += 5.0
    assert recovered_people(truth, shifted, tolerance=1.0) == 1
    missing = truth.copy()
    missing[0, 5, 2] = 0
    assert recovered_people(truth, missing, tolerance=1.0) == 1


def test_the_benchmark_decodes_every_person_of_a_perfect_scene():
    result = benchmark_paf_decode(people=4, input_size=160, repeats=3, warmup=1)
    assert result["recovered"] == result["decoded"] == result["people"] == 4
    assert result["peak_count"] == 4 * 18 and result["grid"] == (20, 20)
    for part in ("peaks", "grouping", "total"):
        assert result[part].runs == 3 and result[part].median_s > 0 and min(result[part].samples) > 0
    table = format_paf_decode_table(result)
    assert "| grouping |" in table and "4 of 4 people recovered, 4 decoded" in table


def test_the_decode_subcommand_times_the_family_it_is_given(repo_root, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("benchmark_script", repo_root / "scripts" / "benchmark.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "table.md"
    assert script.main(["decode", "--family", "openpose", "--people", "3", "--input-size", "128", "--repeats", "2",
                        "--markdown-out", str(out)]) == 0
    table = out.read_text()
    assert table.startswith("### PAF decoding time per image") and "3 of 3 people recovered" in table
    assert "128×128 input" in capsys.readouterr().out
    # --update-readme files it under its own markers, in README.md or a page of docs/
    from posenet.bench.common import find_generated_block

    assert "<!-- /benchmark:decode-openpose -->" in find_generated_block("decode-openpose", repo_root).read_text()
