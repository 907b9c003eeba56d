"""The one registry idiom: every choice a config makes by name (``model.backbone``,
``openpose.network``, ``infer.grouping``, ``model.family``) is a ``Registry`` beside the classes
it names.

    TRUNKS = Registry("model.backbone")

    @TRUNKS.register("resnet", depth="backbone_depth", pretrained="pretrained")
    class ResNetTrunk(Trunk): ...

``register(name, **options)`` is a decorator; ``options`` is the table of the entry's options:
each constructor keyword and the key of the config section it is read from (the library never
sees the config: ``keywords(name, section)`` reads them for the builder). A class whose ``name``
attribute is declared gets the registered name. ``registry[name]`` of a name that is not
registered is one ConfigError naming the config key and the registered names, so the schema
lists no second copy of the choices.
"""
from __future__ import annotations

from typing import Any, Mapping

from posenet.errors import ConfigError


class Registry(dict):
    """Names → classes (a dict), with each entry's table of options; see the module's note."""

    def __init__(self, key: str):
        super().__init__()
        self.key = key
        self.options: dict[str, dict[str, str]] = {}

    def register(self, name: str, **options: str):
        """Decorator: register the decorated class under ``name`` with its ``options`` (keyword →
        config key). ValueError for a name registered twice."""
        def add(obj):
            if name in self:
                raise ValueError(f"{self.key}: {name!r} is already registered (by {self[name].__name__})")
            if hasattr(obj, "name"):
                obj.name = name
            self[name] = obj
            self.options[name] = dict(options)
            return obj

        return add

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a test's temporary entry); nothing when it is not registered."""
        self.pop(name, None)
        self.options.pop(name, None)

    def __missing__(self, name: str):
        raise ConfigError(f"unknown {self.key} {name!r}; choose one of {', '.join(sorted(self))}")

    def keywords(self, name: str, section: Mapping[str, Any]) -> dict[str, Any]:
        """The constructor keywords of ``name``, read from ``section`` (the config section its
        options table refers to)."""
        self[name]  # one clear error for an unknown name
        return {keyword: section[key] for keyword, key in self.options[name].items()}


__all__ = ["Registry"]
