"""What every stage's config shares: documented fields, one config-file rule, checked values.

Each stage has one frozen dataclass (``TrainConfig``, ``ExportConfig``, ``RunConfig``) whose
fields are declared with :func:`option`: the default and a one-line help that the CLI shows,
so that no default is typed twice. A config file is TOML with one table per stage, the same
file for every command::

    [train]
    backbone = "mobilenet_v2"
    image_size = 160

    [export]
    qat_epochs = 3

    [run]
    max_drop = 1.0

Each command reads the tables it uses; flags override the file. An unknown table or field, or
a value of the wrong type, is an error that names the file and the field, before any work.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Demo:
    ...     epochs: int = option(5, "Training epochs.")
    >>> from_values(Demo, {"epochs": "7"}, "the command line")
    Demo(epochs=7)
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from edgeship.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["TABLES", "field_help", "field_type", "from_values", "option", "read_config_file"]

TABLES = ("train", "export", "run")
_MAX_CONFIG_BYTES = 1 << 20  # a config file is a few dozen lines


def option(default: Any, help: str, type: type | None = None) -> Any:
    """A dataclass field with its CLI help; ``type`` is needed when the default is None."""
    return dataclasses.field(default=default, metadata={"help": help, "type": type})


def field_help(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def field_type(f: dataclasses.Field) -> type:
    """The value type of a field: ``int``, ``float``, ``str``, ``bool`` or ``tuple`` (of str)."""
    declared = f.metadata.get("type")
    return declared if declared is not None else type(f.default)


def _coerce(name: str, value: Any, kind: type, source: str) -> Any:
    if value is None:
        return None
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if kind is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if kind is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
            raise ValueError(value)
        if kind in (int, float) and isinstance(value, str) and not value.strip():
            raise ValueError(value)
        return kind(value) if kind is not str or isinstance(value, str) else _reject(value)
    except (TypeError, ValueError):
        expected = {int: "a whole number", float: "a number", str: "a string", bool: "true or false",
                    tuple: "a list of names"}.get(kind, kind.__name__)
        raise ConfigError(f"`{name}` in {source} must be {expected}; received {value!r}.") from None


def _reject(value: Any):
    raise ValueError(value)


def from_values(cls, values: dict[str, Any], source: str):
    """``cls(**values)`` with unknown names and wrong types reported against ``source``.

    Raises:
        ConfigError: a name that is no field of ``cls``, or a value of the wrong type.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"Unknown field(s) {', '.join(unknown)} in {source}. Known fields: {', '.join(sorted(fields))}."
        )
    typed = {name: _coerce(name, value, field_type(fields[name]), source) for name, value in values.items()}
    return cls(**typed)


def read_config_file(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """The tables of a TOML config file (``{}`` for None).

    Raises:
        ConfigError: the file is missing or not TOML, has fields outside the tables, or a
            table other than ``[train]``, ``[export]`` and ``[run]``.
    """
    from edgeship.runtime.files import read_regular_file  # runtime/ imports this module

    if path is None:
        return {}
    try:
        data = tomllib.loads(read_regular_file(path, _MAX_CONFIG_BYTES, follow_links=True).decode("utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"Config file not found: {path}.") from e
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as e:
        raise ConfigError(f"Config file {path} is not valid TOML: {e}.") from e
    loose = sorted(k for k, v in data.items() if not isinstance(v, dict))
    if loose:
        raise ConfigError(
            f"{path} sets {', '.join(loose)} outside any table. Put each field under [train], [export] or [run]."
        )
    unknown = sorted(set(data) - set(TABLES))
    if unknown:
        raise ConfigError(f"{path} has table(s) [{'], ['.join(unknown)}]; expected [train], [export] and/or [run].")
    return data
