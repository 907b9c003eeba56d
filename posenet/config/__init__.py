"""Configs: typed schema, YAML loading with ``_base_`` inheritance, and the builders."""

from posenet.config.loader import load_config, save_config
from posenet.config.schema import PosenetConfig

__all__ = ["PosenetConfig", "load_config", "save_config"]
