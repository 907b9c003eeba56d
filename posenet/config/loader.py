"""Load YAML configs with ``_base_`` inheritance, command-line overrides and typed validation.

A config file may name one or more base files (paths relative to itself)::

    _base_: [_base_/runtime.yaml, _base_/coco2017.yaml]
    data:
      root: data/coco

Bases are merged in order, then the file itself; ``key.sub=value`` overrides from the command
line are merged last. Every value is checked against ``posenet.config.schema``: an unknown key,
a wrong type, a value outside its choices or a required value left unset raises
:class:`ConfigError` with one line naming the key and the file.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from posenet.config.schema import PosenetConfig
from posenet.errors import ConfigError
from posenet.utils.io import RUN_CONFIG_NAME, write_text_atomic

BASE_KEY = "_base_"
RESOLVED_NAME = RUN_CONFIG_NAME


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = (), schema=PosenetConfig) -> DictConfig:
    """The validated config of ``path`` (or the schema's defaults) with ``overrides`` applied."""
    cfg = OmegaConf.structured(schema)
    if path is not None:
        for file, raw in _expand_bases(Path(path)):
            cfg = _merge(cfg, raw, str(file))
    if overrides:
        cfg = _merge(cfg, _parse_overrides(overrides), "the command line")
    _check(cfg, str(path) if path is not None else "the defaults")
    return cfg


def save_config(cfg: DictConfig, out_dir: str | os.PathLike, name: str = RESOLVED_NAME) -> Path:
    """Write the fully resolved config next to a run's outputs (atomically); returns its path."""
    return write_text_atomic(Path(out_dir) / name, OmegaConf.to_yaml(cfg, resolve=True))


def _read_yaml(file: Path) -> dict:
    if not file.is_file():
        raise ConfigError(f"config file not found: {file}")
    try:
        raw = yaml.safe_load(file.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{file}: invalid YAML{where}: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: a config file must hold a mapping of keys, not {type(raw).__name__}")
    return raw


# Keys that were renamed: configs written before (a run's config.yaml) still load, with a warning.
RENAMED = {("data", "layout"): ("data", "folders")}


def _renamed(raw: dict, source: str) -> dict:
    for (section, old), (new_section, new) in RENAMED.items():
        node = raw.get(section)
        if isinstance(node, dict) and old in node:
            warnings.warn(f"{source}: '{section}.{old}' is now '{new_section}.{new}'", ConfigRenameWarning,
                          stacklevel=4)
            raw.setdefault(new_section, {}).setdefault(new, node.pop(old))
    return raw


class ConfigRenameWarning(UserWarning):
    """A config used a key's old name."""


def _expand_bases(file: Path, chain: tuple[Path, ...] = ()) -> Iterable[tuple[Path, dict]]:
    """(file, contents) pairs in merge order: bases depth-first, then the file itself."""
    file = file.resolve()
    if file in chain:
        cycle = " -> ".join(str(p) for p in chain + (file,))
        raise ConfigError(f"{file}: _base_ inheritance forms a cycle: {cycle}")
    raw = _read_yaml(file)
    bases = raw.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{file}: {BASE_KEY} must be a file name or a list of file names")
    for base in bases:
        base_path = file.parent / base
        if not base_path.is_file():
            raise ConfigError(f"{file}: base config not found: {base} (looked for {base_path})")
        yield from _expand_bases(base_path, chain + (file,))
    yield file, _renamed(raw, str(file))


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key or key.startswith("-"):
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid command-line override: {_first_line(e)}") from None


def _merge(cfg: DictConfig, raw: Any, source: str) -> DictConfig:
    try:
        merged = OmegaConf.merge(cfg, raw)
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(e, cfg, source)) from None
    _check_choices(merged, OmegaConf.get_type(merged), "", source)
    return merged


def _describe(e: OmegaConfBaseException, cfg: DictConfig, source: str) -> str:
    key = getattr(e, "full_key", None) or ""
    name = type(e).__name__
    if name == "ConfigKeyError" and key:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        known = list(node.keys()) if isinstance(node, DictConfig) else []
        hint = difflib.get_close_matches(leaf, known, n=1)
        suggestion = f"; did you mean '{(parent + '.' if parent else '') + hint[0]}'?" if hint else ""
        return f"{source}: unknown key '{key}'{suggestion}"
    if key:
        return f"{source}: invalid value for '{key}': {_first_line(e)}"
    return f"{source}: {_first_line(e)}"


def _first_line(e: Exception) -> str:
    msg = getattr(e, "msg", None) or str(e)
    return msg.strip().splitlines()[0]


def _check(cfg: DictConfig, source: str) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        key = missing[0]
        raise ConfigError(
            f"{source}: required value '{key}' is not set (set it in the config file or add {key}=... to the command line)"
        )
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {_first_line(e)}") from None


def _check_choices(node: DictConfig, schema, prefix: str, source: str) -> None:
    for f in dataclasses.fields(schema):
        if OmegaConf.is_missing(node, f.name):
            continue
        value = node[f.name]
        key = prefix + f.name
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            options = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{source}: '{key}' is {value!r}; it must be one of {options}")
        # Nested sections are fields whose default factory is itself a schema dataclass.
        sub = f.default_factory
        if isinstance(sub, type) and dataclasses.is_dataclass(sub) and isinstance(value, DictConfig):
            _check_choices(value, sub, key + ".", source)
