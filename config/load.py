"""Reading the YAML file and turning validation failures into messages an operator can act on."""

from __future__ import annotations

import os
import re
from typing import Any

import msgspec
import yaml

from config.schema import HomeserverConfig, validate


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and what is expected."""


_AT_PATH = re.compile(r"^(.*) - at `\$\.?(.*)`$", re.DOTALL)


def _format_error(error: msgspec.ValidationError) -> str:
    """``Expected `int`, got `str` - at `$.listeners[0].port``` -> ``listeners.0.port: ...``."""
    message = str(error)
    match = _AT_PATH.match(message)
    what, path = match.groups() if match else (message, "")
    path = re.sub(r"\[(\d+)\]", r".\1", path).lstrip(".")
    inner = re.match(r"^(\w+): (.*)$", what)
    if inner and not what.startswith("Expected"):
        # A message from our own checks names its field first.
        path, what = (f"{path}.{inner[1]}" if path else inner[1]), inner[2]
    unknown = re.match(r"^Object contains unknown field `(.*)`$", what)
    if unknown:
        path = f"{path}.{unknown[1]}" if path else unknown[1]
        what = "unknown key (check the spelling against the generated config)"
    return f"  {path or '(top level)'}: {what}"


def _resolve(base_dir: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def parse_config(raw: Any, base_dir: str = ".") -> HomeserverConfig:
    """Validate an already-parsed YAML document; relative paths are taken from ``base_dir``."""
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a YAML mapping of keys to values")
    try:
        config = validate(raw)
    except msgspec.ValidationError as e:
        raise ConfigError("invalid configuration:\n" + _format_error(e)) from None

    config.signing_key_path = _resolve(base_dir, config.signing_key_path)
    config.media.store_path = _resolve(base_dir, config.media.store_path)
    config.privacy.export_path = _resolve(base_dir, config.privacy.export_path)
    if config.consent.template_path:
        config.consent.template_path = _resolve(base_dir, config.consent.template_path)
    if config.logging.file:
        config.logging.file = _resolve(base_dir, config.logging.file)
    if config.federation.ca_file:
        config.federation.ca_file = _resolve(base_dir, config.federation.ca_file)
    if config.database.name == "sqlite":
        db = str(config.database.args.get("database", "homeserver.db"))
        if db != ":memory:":
            config.database.args["database"] = _resolve(base_dir, db)
    for listener in config.listeners:
        if listener.tls_certificate_path:
            listener.tls_certificate_path = _resolve(base_dir, listener.tls_certificate_path)
        if listener.tls_private_key_path:
            listener.tls_private_key_path = _resolve(base_dir, listener.tls_private_key_path)
    return config


def load_config(path: str) -> HomeserverConfig:
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist; create one with "
            f"--generate-config --server-name NAME -c {path}"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    return parse_config(raw, os.path.dirname(os.path.abspath(path)))
