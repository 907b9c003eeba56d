import subprocess
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from posenet.config import load_config, save_config
from posenet.errors import ConfigError


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


@pytest.fixture
def tree(tmp_path):
    """base.yaml <- mid.yaml <- top.yaml, with a second base beside mid."""
    write(tmp_path / "_base_" / "base.yaml", {"name": "base", "seed": 1, "data": {"root": "/data/a", "val_split": "val2017"}})
    write(tmp_path / "_base_" / "other.yaml", {"synthetic": {"num_train": 7}})
    write(tmp_path / "mid.yaml", {"_base_": "_base_/base.yaml", "seed": 2, "data": {"root": "/data/b"}})
    write(tmp_path / "top.yaml", {"_base_": ["mid.yaml", "_base_/other.yaml"], "name": "top"})
    return tmp_path


def test_inheritance_merges_bases_in_order(tree):
    cfg = load_config(tree / "top.yaml")
    assert cfg.name == "top"  # the file itself wins over its bases
    assert cfg.seed == 2  # mid overrides base
    assert cfg.data.root == "/data/b"
    assert cfg.data.val_split == "val2017"  # from the deepest base
    assert cfg.synthetic.num_train == 7  # from the second base
    assert cfg.synthetic.num_val == 50  # schema default untouched
    assert cfg.output_dir == "runs/top"  # interpolation resolves against the merged result


def test_command_line_overrides_win_and_are_typed(tree):
    cfg = load_config(tree / "top.yaml", ["seed=9", "data.root=/x", "synthetic.num_val=3", "data.keypoints.flip_pairs=[[1,2]]"])
    assert cfg.seed == 9 and isinstance(cfg.seed, int)
    assert cfg.data.root == "/x"
    assert cfg.synthetic.num_val == 3
    assert list(cfg.data.keypoints.flip_pairs[0]) == [1, 2]


def test_unknown_key_in_a_file_names_key_and_file(tree):
    write(tree / "bad.yaml", {"_base_": "top.yaml", "data": {"rooot": "/x"}})
    with pytest.raises(ConfigError) as e:
        load_config(tree / "bad.yaml")
    msg = str(e.value)
    assert "data.rooot" in msg and "bad.yaml" in msg and "did you mean 'data.root'" in msg
    assert "\n" not in msg


def test_unknown_key_in_a_base_names_the_base(tree):
    write(tree / "_base_" / "broken.yaml", {"synthetic": {"nope": 1}})
    write(tree / "child.yaml", {"_base_": ["top.yaml", "_base_/broken.yaml"]})
    with pytest.raises(ConfigError, match=r"broken\.yaml: unknown key 'synthetic\.nope'"):
        load_config(tree / "child.yaml")


def test_unknown_key_on_the_command_line(tree):
    with pytest.raises(ConfigError, match=r"command line: unknown key 'synthetic\.sed'; did you mean 'synthetic\.seed'"):
        load_config(tree / "top.yaml", ["synthetic.sed=3"])


def test_wrong_type_names_key_and_file(tree):
    write(tree / "typed.yaml", {"_base_": "top.yaml", "synthetic": {"num_train": "many"}})
    with pytest.raises(ConfigError, match=r"typed\.yaml: invalid value for 'synthetic\.num_train'"):
        load_config(tree / "typed.yaml")
    with pytest.raises(ConfigError, match=r"command line: invalid value for 'seed'"):
        load_config(tree / "top.yaml", ["seed=1.5"])


def test_value_outside_its_choices(tree):
    with pytest.raises(ConfigError, match=r"'data\.folders' is 'coco2019'; it must be one of 'coco2017', 'coco2014'"):
        load_config(tree / "top.yaml", ["data.folders=coco2019"])


def test_missing_required_value(tree):
    write(tree / "noroot.yaml", {"name": "x"})
    with pytest.raises(ConfigError, match=r"noroot\.yaml: required value 'data\.root' is not set"):
        load_config(tree / "noroot.yaml")
    assert load_config(tree / "noroot.yaml", ["data.root=/d"]).data.root == "/d"


def test_file_problems_are_one_line(tree):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tree / "absent.yaml")
    write(tree / "nobase.yaml", {"_base_": "gone.yaml"})
    with pytest.raises(ConfigError, match=r"nobase\.yaml: base config not found: gone\.yaml"):
        load_config(tree / "nobase.yaml")
    write(tree / "syntax.yaml", "data:\n  root: [unclosed\n")
    with pytest.raises(ConfigError, match=r"syntax\.yaml: invalid YAML at line"):
        load_config(tree / "syntax.yaml")
    write(tree / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tree / "list.yaml")
    with pytest.raises(ConfigError, match="not of the form key.sub=value"):
        load_config(tree / "top.yaml", ["seed"])


def test_inheritance_cycle_is_reported(tree):
    write(tree / "a.yaml", {"_base_": "b.yaml"})
    write(tree / "b.yaml", {"_base_": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tree / "a.yaml")


def test_resolved_config_round_trips(tree, tmp_path):
    cfg = load_config(tree / "top.yaml", ["seed=5"])
    path = save_config(cfg, tmp_path / "run")
    text = path.read_text()
    assert "${" not in text  # interpolations are resolved
    again = load_config(path)
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg, resolve=True)


def test_every_shipped_config_is_valid(repo_root):
    configs = sorted(p for p in (repo_root / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)


def test_script_reports_config_errors_in_one_line(repo_root):
    """A script given a bad key prints one line on stderr and exits 2, without a traceback."""
    proc = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "demo.py"), "--config",
         str(repo_root / "configs" / "synthetic_small.yaml"), "synthetic.nmu_train=3"],
        capture_output=True, text=True, cwd=repo_root,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "unknown key 'synthetic.nmu_train'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_overrides_may_come_before_and_after_options(repo_root):
    from posenet import cli

    parser = cli.config_parser("test")
    parser.add_argument("--out")
    args, cfg = cli.parse_config_args(parser, ["--config", str(repo_root / "configs" / "synthetic_small.yaml"),
                                               "seed=3", "--out", "somewhere", "train.epochs=2"])
    assert args.out == "somewhere" and cfg.seed == 3 and cfg.train.epochs == 2


def test_a_renamed_key_still_loads_with_a_warning(tmp_path):
    from posenet.config.loader import ConfigRenameWarning

    write(tmp_path / "old.yaml", {"name": "x", "data": {"root": "/d", "layout": "coco2014"}})
    with pytest.warns(ConfigRenameWarning, match="'data.layout' is now 'data.folders'"):
        cfg = load_config(tmp_path / "old.yaml")
    assert cfg.data.folders == "coco2014" and "layout" not in cfg.data
