"""Configuration: a strict YAML schema (``schema``), loaded in two phases (``load``)."""

from modelyard.config.load import RuntimeConfig, load_config, load_config_file

__all__ = ["RuntimeConfig", "load_config", "load_config_file"]
