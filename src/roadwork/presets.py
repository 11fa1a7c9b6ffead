"""Apply a preset (a partial params file) to params.yaml, validated before anything is written.

    python -m roadwork.presets apply presets/real.yaml [--params params.yaml]
    python -m roadwork.presets show presets/real.yaml      # the merged, validated params

Comments in params.yaml are kept (ruamel.yaml round trip); keys the preset does not name keep
their current values. Sections merge key by key; a value that is itself an open mapping
(``model.overrides``, ``data.local.class_folders``, ``split.ratios``...) is replaced whole, so
``overrides: {}`` in a preset means "no overrides", not "keep params.yaml's".
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from pathlib import Path

import yaml
from pydantic import BaseModel
from ruamel.yaml import YAML

from roadwork.config import ConfigError, Params, parse_params
from roadwork.io import write_text

log = logging.getLogger(__name__)


def _section(schema: type[BaseModel] | None, key: str) -> type[BaseModel] | None:
    """The pydantic section class of field `key` of `schema`, or None for any other value."""
    field = schema.model_fields.get(key) if schema is not None else None
    kind = field.annotation if field is not None else None
    return kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


def merge(base, patch, schema: type[BaseModel] | None = Params):
    """Merge `patch` into the plain or ruamel mapping `base` (patch wins), in place: params
    sections (pydantic models in `schema`) recursively, every other value (open mappings such as
    model.overrides included) replaced whole."""
    for key, value in patch.items():
        section = _section(schema, key)
        if section is not None and isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value, section)
        else:
            base[key] = value
    return base


def load_preset(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: preset not found (see presets/)")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a preset is a mapping of params sections")
    return raw


def resolve(preset: str | Path, params_path: str | Path = "params.yaml") -> Params:
    """The params that applying `preset` would give, validated like params.yaml."""
    base = yaml.safe_load(Path(params_path).read_text()) or {}
    return parse_params(merge(base, load_preset(preset)), f"{params_path} + {preset}")


def apply(preset: str | Path, params_path: str | Path = "params.yaml") -> Params:
    params = resolve(preset, params_path)  # fails before writing anything
    round_trip = YAML()
    round_trip.preserve_quotes = True
    round_trip.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    document = round_trip.load(Path(params_path).read_text())
    merge(document, load_preset(preset))
    buffer = io.StringIO()
    round_trip.dump(document, buffer)
    write_text(params_path, buffer.getvalue())
    return params


def main(argv=None) -> None:
    from roadwork.log import setup as setup_logging

    setup_logging()
    parser = argparse.ArgumentParser(
        prog="python -m roadwork.presets", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["apply", "show"])
    parser.add_argument("preset")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        params = (apply if args.action == "apply" else resolve)(args.preset, args.params)
    except ConfigError as error:
        sys.exit(str(error))
    if args.action == "show":
        print(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    else:
        log.info("applied %s to %s; run `dvc repro` or `dvc exp run`", args.preset, args.params)


if __name__ == "__main__":
    main()
