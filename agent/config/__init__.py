"""Configuration: YAML in, validated frozen objects out (see loader.py for the rules).

The names are resolved on first use, so that importing one module of the package
(the model, as the configuration cache does) does not load the readers.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config.loader import DEFAULT_PATH, load_config, parse_config
    from agent.config.model import Config
    from agent.config.reader import ConfigError, Problem

_HOMES = {
    "DEFAULT_PATH": "loader",
    "load_config": "loader",
    "parse_config": "loader",
    "Config": "model",
    "ConfigError": "reader",
    "Problem": "reader",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)


__all__ = ["DEFAULT_PATH", "Config", "ConfigError", "Problem", "load_config", "parse_config"]
