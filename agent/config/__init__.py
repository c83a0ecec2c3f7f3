"""Configuration: YAML in, validated frozen objects out (see loader.py for the rules)."""

from agent.config.loader import DEFAULT_PATH, load_config, parse_config
from agent.config.model import Config
from agent.config.reader import ConfigError, Problem

__all__ = ["DEFAULT_PATH", "Config", "ConfigError", "Problem", "load_config", "parse_config"]
