"""docs/params.md and params.yaml's layout and comments, generated from src/roadwork/config.py.

config.py is the one source of each param's default and description (pydantic ``Field``); this
module writes them out:

    python -m roadwork.paramsdoc --write   # docs/params.md, and params.yaml from the defaults
    python -m roadwork.paramsdoc --check   # exit 1 naming what is stale (tests/test_paramsdoc.py runs it)

params.yaml holds the values a run uses (presets and ``dvc exp run -S`` change them), so the check
compares its keys, their order and its comments with the generated ones, not its values.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
import types
from pathlib import Path
from typing import Annotated, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from roadwork.config import Params, parse_params

REPO = Path(__file__).resolve().parents[2]
PARAMS_MD = Path("docs/params.md")
PARAMS_YAML = Path("params.yaml")

HEADER = """\
# The single source of configuration values for the pipeline. Validated on load (src/roadwork/config.py):
# an unknown key, a wrong type or an out-of-range value stops the stage before any work, naming the key.
# Keys, order and comments are generated from config.py's defaults and descriptions
# (python -m roadwork.paramsdoc --write; reference: docs/params.md). Change values here, descriptions there.
# Real runs: see presets/ and the README ("Real runs").
"""
WIDTH = 118  # longest generated line of params.yaml, where a description allows
COMMENT_COLUMN = 27  # inline comments start here (or two spaces after a longer key: value)


# ----------------------------------------------------------------------------------- the schema
def _section(annotation) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _strip(annotation):
    """(annotation without Annotated[...] layers, the constraints those layers carried)."""
    metadata = []
    while get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        metadata.extend(extra)
    return annotation, metadata


def type_name(annotation) -> str:
    annotation, _ = _strip(annotation)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        names = [type_name(arg) for arg in args if arg is not type(None)]
        return " \\| ".join(names) + (" \\| null" if type(None) in args else "")
    if origin is Literal:
        return "str" if all(isinstance(arg, str) for arg in args) else "int"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list[{type_name(args[0])}]"
        return "[" + ", ".join(type_name(arg) for arg in args) + "]"
    if origin is list:
        return f"list[{type_name(args[0])}]"
    if origin is dict:
        return f"map[{type_name(args[0])}, {type_name(args[1])}]"
    if _section(annotation):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _literals(annotation) -> list:
    annotation, _ = _strip(annotation)
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    found = []
    for arg in get_args(annotation):
        if arg is not Ellipsis:
            found.extend(value for value in _literals(arg) if value not in found)
    return found


def _bounds(metadata) -> list[str]:
    words = []
    for item in metadata:
        for name, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(item, name, None)
            if isinstance(item, getattr(annotated_types, name.capitalize())) and value is not None:
                words.append(f"{sign} {value:g}")
        if isinstance(item, annotated_types.MinLen) and item.min_length:
            words.append("not empty" if item.min_length == 1 else f"at least {item.min_length} items")
    return words


def allowed(field) -> str:
    """The values a field accepts, in words (the Literal choices and the numeric bounds)."""
    annotation, inner = _strip(field.annotation)
    origin, args = get_origin(annotation), get_args(annotation)
    words = _bounds(list(field.metadata) + inner)
    for arg in args:  # bounds inside Optional[...] / list[...] members
        words.extend(word for word in _bounds(_strip(arg)[1]) if word not in words)
    choices = " \\| ".join(f"`{render_scalar(value)}`" for value in _literals(annotation))
    if choices:
        many = origin in (tuple, list) or (origin is dict)
        words.insert(0, f"each of {choices}" if many else choices)
    if annotation is bool:
        words.insert(0, "`true` \\| `false`")
    if origin in (Union, types.UnionType) and type(None) in args:
        words.append("or `null`")
    return ", ".join(words)


def sections(model: type[BaseModel] = Params, prefix: str = ""):
    """(dotted path, section class, field of the parent or None) of every section, depth first."""
    yield prefix, model
    for name, field in model.model_fields.items():
        child = _section(field.annotation)
        if child is not None:
            yield from sections(child, f"{prefix}.{name}" if prefix else name)


def _lookup(values: dict, path: str):
    for part in path.split(".") if path else []:
        values = values[part]
    return values


def _field(path: str):
    model, field = Params, None
    for part in path.split("."):
        field = model.model_fields[part]
        model = _section(field.annotation)
    return field


# ------------------------------------------------------------------------------------ rendering
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./+-]*")


def render_scalar(value) -> str:
    """One YAML scalar as params.yaml writes it: PyYAML and DVC read it back as the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        mantissa, _, exponent = text.partition("e")
        if exponent:  # PyYAML reads 1e-06 as a string: a float needs the dot (1.0e-06)
            text = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}"
        return text
    text = str(value)
    plain = _PLAIN.fullmatch(text) and text.lower() not in {"null", "true", "false", "yes", "no", "on", "off", "y", "n"}
    return text if plain else json.dumps(text, ensure_ascii=False)


def render_value(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{render_key(k)}: {render_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(render_value(v) for v in value) + "]"
    return render_scalar(value)


def render_key(key: str) -> str:
    return key if _PLAIN.fullmatch(key) and render_scalar(key) == key else json.dumps(key)


def _comment_lines(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, WIDTH - len(indent) - 2, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ")


def _line(head: str, description: str | None, indent: str) -> list[str]:
    """`head` with its description inline where it fits, else the description above it."""
    if not description:
        return [head]
    inline = f"{head}{' ' * max(2, COMMENT_COLUMN - len(head))}# {description}"
    if len(inline) <= WIDTH:
        return [inline]
    return [*_comment_lines(description, indent), head]


def _yaml_lines(model: type[BaseModel], values: dict, depth: int) -> list[str]:
    lines, indent = [], "  " * depth
    for name, field in model.model_fields.items():
        value, child = values[name], _section(field.annotation)
        if child is not None and isinstance(value, dict):
            if depth == 0 and lines:
                lines.append("")
            lines += _line(f"{indent}{name}:", field.description, indent)
            lines += _yaml_lines(child, value, depth + 1)
        else:
            lines += _line(f"{indent}{name}: {render_value(value)}", field.description, indent)
    return lines


def params_yaml(values: dict | None = None) -> str:
    """params.yaml: `values` (the defaults when None) with config.py's layout and descriptions."""
    values = Params().model_dump(mode="json") if values is None else values
    return HEADER + "\n" + "\n".join(_yaml_lines(Params, values, 0)) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_default(value) -> str:
    text = render_value(value)
    if len(text) > 60:
        text = f"{text[:57]}... ({len(text)} characters)"
    return f"`{text}`" if "`" not in text else text


def _doc(model: type[BaseModel]) -> str:
    own = model.__doc__ if "__doc__" in model.__dict__ else None
    return " ".join((own or "").split())


def params_md() -> str:
    defaults = Params().model_dump(mode="json")
    out = [
        "# Parameters",
        "",
        "<!-- generated by `python -m roadwork.paramsdoc --write` from src/roadwork/config.py; do not edit -->",
        "",
        "Every key of `params.yaml`, with its default (the embedded default), what it accepts and what it does.",
        "The defaults and descriptions live in `src/roadwork/config.py` (pydantic `Field`s; the `synthesize`",
        "section in `src/roadwork/synthesize/params.py`, which cites the validators' code line by line);",
        "`params.yaml`'s layout and comments are generated from them. An unknown key, a wrong type or a value",
        "out of range stops a stage before any work, naming the key. Presets (`presets/*.yaml`,",
        "`python -m roadwork.presets apply`) and `dvc exp run -S key=value` change values, not this table.",
    ]
    for path, model in sections():
        if not path:
            continue
        field = _field(path)
        out += ["", f"{'##' if '.' not in path else '###'} `{path}`", ""]
        parts = [_doc(model)]
        if field.description and not parts[0].lower().startswith(field.description.lower()[:15]):  # no restating
            parts.append(field.description[0].upper() + field.description[1:])
        intro = ". ".join(part.rstrip(".") for part in parts if part)
        if intro:
            out += [intro[0].upper() + intro[1:] + ("" if intro.endswith(".") else "."), ""]
        leaves = [(name, f) for name, f in model.model_fields.items() if _section(f.annotation) is None]
        if not leaves:
            out.append("Sections: " + ", ".join(f"`{path}.{name}`" for name in model.model_fields) + ".")
            continue
        out += ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
        values = _lookup(defaults, path)
        for name, f in model.model_fields.items():
            if _section(f.annotation) is not None:
                out.append(f"| `{name}` | section | | | see `{path}.{name}` below |")
                continue
            cells = [f"`{name}`", type_name(f.annotation), _md_default(values[name]), allowed(f), f.description or ""]
            out.append("| " + " | ".join(_md_cell(cell) if i == 4 else cell for i, cell in enumerate(cells)) + " |")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------- comparing params.yaml
def skeleton(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """params.yaml without its values: (dotted key, its comments) in file order, the header first.
    A preset or `dvc exp run -S` changes values, never this."""
    document = YAML().load(text)
    out = [("(header)", _comments(getattr(document.ca, "comment", None)))]

    def walk(node: CommentedMap, model, prefix: str):
        for key in node:
            path = f"{prefix}{key}"
            comments = _comments(node.ca.items.get(key))
            child = _section(model.model_fields[key].annotation) if model and key in model.model_fields else None
            value = node[key]
            if isinstance(value, CommentedMap) and child is not None:
                comments += _comments(getattr(value.ca, "comment", None))
                out.append((path, comments))
                walk(value, child, f"{path}.")
            else:
                out.append((path, comments))

    walk(document, Params, "")
    return out


def _comments(tokens) -> tuple[str, ...]:
    lines = []
    for token in _flatten(tokens):
        for line in token.value.splitlines():
            line = line.strip().lstrip("#").strip()
            if line:
                lines.append(line)
    return tuple(lines)


def _flatten(tokens):
    if tokens is None:
        return
    if isinstance(tokens, list):
        for token in tokens:
            yield from _flatten(token)
    elif hasattr(tokens, "value"):
        yield tokens


def _first_difference(have, want) -> str:
    for (key_have, c_have), (key_want, c_want) in zip(have, want):
        if key_have != key_want:
            return f"key {key_have!r} where config.py has {key_want!r}"
        if c_have != c_want:
            return f"comment of {key_have!r} differs: {' '.join(c_have)!r}, expected {' '.join(c_want)!r}"
    if len(have) != len(want):
        extra = have[len(want) :] or want[len(have) :]
        return f"{'extra' if len(have) > len(want) else 'missing'} key {extra[0][0]!r}"
    return ""


def stale(root: Path = REPO) -> list[str]:
    """What is out of date, one line each (empty: both files are current)."""
    problems = []
    md = root / PARAMS_MD
    if not md.is_file() or md.read_text(encoding="utf-8") != params_md():
        problems.append(f"{PARAMS_MD}: not generated from config.py (run python -m roadwork.paramsdoc --write)")
    yaml_path = root / PARAMS_YAML
    if not yaml_path.is_file():
        problems.append(f"{PARAMS_YAML}: missing")
    else:
        difference = _first_difference(skeleton(yaml_path.read_text(encoding="utf-8")), skeleton(params_yaml()))
        if difference:
            problems.append(f"{PARAMS_YAML}: {difference} (keys, order and comments come from config.py)")
    return problems


def write(root: Path = REPO, values: bool = True) -> None:
    """Write docs/params.md, and params.yaml from the defaults (`values`) or keeping its values."""
    from roadwork.io import write_text

    (root / PARAMS_MD).parent.mkdir(parents=True, exist_ok=True)
    write_text(root / PARAMS_MD, params_md())
    current = None
    if not values and (root / PARAMS_YAML).is_file():
        import yaml

        raw = yaml.safe_load((root / PARAMS_YAML).read_text(encoding="utf-8"))
        current = parse_params(raw, str(PARAMS_YAML)).model_dump(mode="json")
    write_text(root / PARAMS_YAML, params_yaml(current))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m roadwork.paramsdoc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="write docs/params.md and params.yaml (defaults)")
    group.add_argument(
        "--write-keep-values",
        action="store_true",
        help="as --write, keeping params.yaml's current values (after a preset or an experiment)",
    )
    group.add_argument("--check", action="store_true", help="exit 1 naming the stale files")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale(Path.cwd())
        for problem in problems:
            print(problem, file=sys.stderr)
        sys.exit(1 if problems else 0)
    write(Path.cwd(), values=not args.write_keep_values)
    print(f"wrote {PARAMS_MD} and {PARAMS_YAML}")


if __name__ == "__main__":
    main()
