"""Configuration: one YAML file, a typed schema, validation with clear errors."""

from config.load import ConfigError, load_config
from config.schema import HomeserverConfig

__all__ = ["ConfigError", "HomeserverConfig", "load_config"]
