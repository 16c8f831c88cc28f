"""The reference tables of ``docs/configuration.md``, generated from the config schema.

Keys, defaults, allowed values and meanings all come from the validated dataclasses
(:mod:`smpc_synth.config`, :mod:`smpc_synth.runtime.party_config`) through pydantic's JSON
schema, so the page cannot drift from what is enforced. Regenerate with ``make docs``
(``python -m smpc_synth.config_reference --write``); a test fails if the page is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

BEGIN = "<!-- BEGIN GENERATED: python -m smpc_synth.config_reference --write -->"
END = "<!-- END GENERATED -->"
DOCS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def reference() -> str:
    """The generated part of the page: one table per TOML table."""
    from smpc_synth.config import RunConfig, sections
    from smpc_synth.runtime.party_config import PARTY_FILE_TABLES

    parts = [_table("[run]", RunConfig, skip=set(sections(RunConfig)))]
    for name, section in sections(RunConfig).items():
        parts.append(_table(f"[run.{name}]", section))
    for name, table in PARTY_FILE_TABLES.items():
        parts.append(_table(f"[[{name}]]" if name == "peers" else f"[{name}]", table))
    return "\n".join(parts)


def _table(title: str, cls: type, skip: set[str] = frozenset()) -> str:
    schema = TypeAdapter(cls).json_schema()
    required = set(schema.get("required", ()))
    lines = [f"`{title}`", "", "| key | default | allowed | meaning |", "|---|---|---|---|"]
    for key, prop in schema["properties"].items():
        if key in skip:
            continue
        if "description" not in prop:
            raise ValueError(f"{cls.__name__}.{key} has no description for the docs")
        if key in required:
            default = "required"
        else:  # a list or table field has a default factory, not a default
            default = _value(prop["default"]) if "default" in prop else "empty"
        lines.append(f"| `{key}` | {default} | {_allowed(prop)} | {prop['description']} |")
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if value == [] or value == {}:
        return "empty"
    return f"`{value}`"


def _allowed(prop: dict[str, Any]) -> str:
    from smpc_synth.config import PATTERN_WORDS

    if "anyOf" in prop:
        options = [_allowed(p) for p in prop["anyOf"] if p.get("type") != "null"]
        return " or ".join(options) + (" or unset" if len(options) < len(prop["anyOf"]) else "")
    if "enum" in prop:
        return ", ".join(f"`{v}`" for v in prop["enum"])
    kind = prop.get("type")
    if kind == "array":
        return f"list of {_allowed(prop.get('items', {}))}"
    words = {"integer": "integer", "number": "number", "boolean": "`true`/`false`"}
    words |= {"string": "text", "object": "table"}
    text = words.get(kind, "any")
    if "pattern" in prop:
        text = PATTERN_WORDS.get(prop["pattern"], text)
    bounds = [
        f"{sign} {_number(prop[key])}"
        for key, sign in (
            ("exclusiveMinimum", ">"),
            ("minimum", "≥"),
            ("exclusiveMaximum", "<"),
            ("maximum", "≤"),
        )
        if key in prop
    ]
    if prop.get("minLength"):
        bounds.append("not empty")
    return text + (" " + ", ".join(bounds) if bounds else "")


def _number(value: float) -> str:
    if isinstance(value, int) and abs(value) >= 2**16 and value & (value + 1) == 0:
        return f"2^{(value + 1).bit_length() - 1} - 1"
    if isinstance(value, int) and abs(value) >= 2**10 and value & (value - 1) == 0:
        return f"2^{value.bit_length() - 1}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def render_page(page: str) -> str:
    """``page`` with the text between the markers replaced by :func:`reference`."""
    if BEGIN not in page or END not in page:
        raise ValueError(f"the page lacks the markers {BEGIN!r} and {END!r}")
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{reference()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"update {DOCS_PAGE}")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    page = DOCS_PAGE.read_text(encoding="utf-8")
    fresh = render_page(page)
    if args.write:
        DOCS_PAGE.write_text(fresh, encoding="utf-8")
        print(f"wrote {DOCS_PAGE}")
    elif args.check:
        if fresh != page:
            print(f"{DOCS_PAGE} is stale: run make docs", file=sys.stderr)
            return 1
    else:
        print(reference())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
