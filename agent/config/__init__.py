"""Configuration: YAML in, validated frozen objects out (see loader.py for the rules).

The names are resolved on first use, so that importing one module of the package
(the model, as the configuration cache does) does not load the readers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.lazy import lazy_names

if TYPE_CHECKING:
    from agent.config.loader import DEFAULT_PATH, load_config, parse_config
    from agent.config.model import Config
    from agent.config.reader import ConfigError, Problem

__getattr__ = lazy_names(
    __name__,
    {
        "DEFAULT_PATH": "loader",
        "load_config": "loader",
        "parse_config": "loader",
        "Config": "model",
        "ConfigError": "reader",
        "Problem": "reader",
    },
)

__all__ = ["DEFAULT_PATH", "Config", "ConfigError", "Problem", "load_config", "parse_config"]
