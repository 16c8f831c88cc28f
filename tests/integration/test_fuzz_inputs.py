"""Fuzzing what users hand the command line: CSV files, schemas and member configs.

Hypothesis draws (seeded) tables with their schemas and a member's PARTY.toml, then breaks
each in one known way: a huge integer, NaN or infinity, text in a number column, an unknown
category, a ragged row, a duplicate header, a ';' or tab separator, a byte-order mark, Latin-1
bytes, a header-only or empty file, a very wide table; a schema bound no float can hold, a bad
kind; a config value of the wrong type or out of range, an unknown key, broken TOML. Every
case runs through the real command line (``train``, ``schema infer``, ``simulate``, ``party
--config``) in one worker process and must end with exit code 2 and a message naming the file
and the column and row, or the key; no traceback may reach the user, and the worker's memory
stays bounded. A few valid inputs (``schema infer``) must exit 0.

The default run tries a few hundred inputs in seconds; ``-m slow`` tries thousands.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import resource
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from smpc_synth.config import RunConfig, sections
from smpc_synth.runtime.party_config import PARTY_FILE_TABLES

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "support" / "fuzz_cli_worker.py"
MEMORY_GROWTH_BOUND_MIB = 512  # peak RSS over the worker's RSS once its imports are done


# -- generated inputs ---------------------------------------------------------------------

NAME = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
# categories: never a missing-value or true/false token, which inference reads otherwise
WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzæøåéü", min_size=1, max_size=8).filter(
    lambda w: w not in {"na", "nan", "null", "none", "true", "false"}
)
KINDS = ("integer", "numeric", "categorical", "boolean")
INT_RANGE = (-1000, 1000)
FLOAT_RANGE = (-1e6, 1e6)


@dataclass
class Table:
    names: list[str]
    kinds: list[str]
    rows: list[list[str]]
    categories: dict[str, list[str]] = field(default_factory=dict)

    def schema(self) -> dict[str, Any]:
        columns = []
        for name, kind in zip(self.names, self.kinds):
            column: dict[str, Any] = {"name": name, "kind": kind}
            if kind == "integer":
                column |= {"min": INT_RANGE[0], "max": INT_RANGE[1]}
            elif kind == "numeric":
                column |= {"min": FLOAT_RANGE[0], "max": FLOAT_RANGE[1]}
            elif kind == "categorical":
                column["categories"] = self.categories[name]
            columns.append(column)
        return {"version": 1, "columns": columns}

    def csv(self, delimiter: str = ",", header: list[str] | None = None) -> str:
        out = io.StringIO()
        writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header or self.names)
        writer.writerows(self.rows)
        return out.getvalue()


@st.composite
def cells(draw, kind: str, categories: list[str] | None) -> str:
    if kind == "integer":
        return str(draw(st.integers(*INT_RANGE)))
    if kind == "numeric":
        return f"{draw(st.floats(*FLOAT_RANGE, allow_nan=False)):.6g}"
    if kind == "categorical":
        return draw(st.sampled_from(categories))
    return draw(st.sampled_from(["true", "false", "True", "FALSE"]))


@st.composite
def tables(
    draw, wide: bool = False, rows: tuple[int, int] = (12, 40), first_kind: str | None = None
) -> Table:
    n_rows = draw(st.integers(*rows))
    if wide:  # many integer columns, filled from a seeded generator (drawing each is slow)
        n_cols = draw(st.integers(300, 1500))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        body = rng.integers(*INT_RANGE, size=(n_rows, n_cols)).astype(str).tolist()
        return Table([f"c{i}" for i in range(n_cols)], ["integer"] * n_cols, body)
    n_cols = draw(st.integers(2, 6))
    names = draw(st.lists(NAME, min_size=n_cols, max_size=n_cols, unique=True))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=n_cols, max_size=n_cols))
    if first_kind is not None:
        kinds[0] = first_kind
    categories = {
        n: draw(st.lists(WORD, min_size=2, max_size=5, unique=True))
        for n, k in zip(names, kinds)
        if k == "categorical"
    }
    body = [
        [draw(cells(k, categories.get(n))) for n, k in zip(names, kinds)] for _ in range(n_rows)
    ]
    return Table(names, kinds, body, categories)


# A broken cell for each kind: what the schema refuses; those marked "bare" are refused
# without a schema too (inference, then validation against the inferred schema).
BAD_CELLS: dict[str, list[tuple[str, bool]]] = {
    "integer": [
        (str(2**63 + 5), True),
        (str(10**30), True),
        (str(-(2**60)), True),
        ("3.5", False),
        ("1e999", True),
        ("inf", True),
        ("-Infinity", True),
        ("nan", True),
        ("NaN", True),
        ("", True),
        ("forty", False),
        ("1,000", False),
        ("0x1F", False),
    ],
    "numeric": [
        ("1e999", True),
        ("-1e999", True),
        ("inf", True),
        ("nan", True),
        ("", True),
        ("lots", False),
        ("1e308", False),
        ("-1e7", False),
    ],
    "categorical": [("", True), ("zürich-x", False), ("Paris", False)],
    "boolean": [("maybe", False), ("", True), ("2", False), ("yes", False)],
}


@dataclass
class Broken:
    """One broken input file and what the command line must say about it."""

    label: str
    content: bytes
    named: list[str]  # pieces the message must hold besides the file
    bare: bool  # refused without a schema too
    schema: dict[str, Any]  # the schema of the table before it was broken
    infer_fails: bool = False  # `schema infer` refuses it (else it must succeed)


# Every way a CSV is broken; "cell" and "bom" once per column kind. Each is drawn equally
# often, so a small run still meets every one.
CSV_WAYS: list[tuple[str, str | None]] = [
    *(("cell", k) for k in KINDS),
    *(("bom", k) for k in KINDS),
    *((how, None) for how in ("huge_cell", "ragged", "dupe", "delimiter", "header_only")),
    *((how, None) for how in ("empty", "latin1", "missing", "extra", "few_rows", "bytes")),
]


@st.composite
def broken_csvs(draw, how: str, kind: str | None = None, wide: bool = False) -> Broken:
    if how == "huge_cell":
        kind = "categorical"
    table = draw(tables(wide=wide, first_kind=None if wide else kind))
    schema = table.schema()
    if how in ("cell", "bom", "huge_cell"):
        kind = kind or table.kinds[0]
        col = draw(st.sampled_from([i for i, k in enumerate(table.kinds) if k == kind]))
        if how == "huge_cell":  # a 2 MB cell: refused as an unknown category, shown cut short
            value, bare = "x" * 2_000_000, False
        else:
            value, bare = draw(st.sampled_from(BAD_CELLS[kind]))
        if kind == "categorical" and value in table.categories[table.names[col]]:
            value += "-not-a-category"
        row = draw(st.integers(0, len(table.rows) - 1))
        table.rows[row][col] = value
        big = value.lstrip("-").isdigit() and abs(int(value)) >= 2**53
        data = (codecs.BOM_UTF8 if how == "bom" else b"") + table.csv().encode()
        named = [f"'{table.names[col]}'", f"row {row + 1} (line {row + 2})"]
        label = f"{how}:{kind}:{value[:20]!r}"
        return Broken(label, data, named, bare, schema, infer_fails=big)
    if how == "ragged":
        row = draw(st.integers(0, len(table.rows) - 1))
        table.rows[row].append("extra")
        return Broken(how, table.csv().encode(), [f"line {row + 2}"], True, schema, True)
    if how == "dupe":
        i, j = draw(st.permutations(range(len(table.names))))[:2]
        header = list(table.names)
        header[j] = header[i]
        data = table.csv(header=header).encode()
        return Broken(how, data, [f"'{header[i]}'"], True, schema, True)
    if how == "delimiter":
        sep = draw(st.sampled_from([";", "\t", "|"]))
        word = {";": "';'", "\t": "tab", "|": "'|'"}[sep]
        data = table.csv(sep).encode()
        return Broken(f"{how}:{sep!r}", data, [f"{word}-separated"], True, schema, True)
    if how == "header_only":
        data = (",".join(table.names) + "\n").encode()
        return Broken(how, data, ["no data rows"], True, schema, True)
    if how == "empty":
        data = draw(st.sampled_from([b"", b"\n", b"\n\n\n"]))
        return Broken(how, data, ["empty"], True, schema, True)
    if how == "latin1":
        table.rows[0][0] = "café"
        return Broken(how, table.csv().encode("latin-1"), ["UTF-8"], True, schema, True)
    if how == "missing":
        col = draw(st.integers(0, len(table.names) - 1))
        header = table.names[:col] + table.names[col + 1 :]
        table.rows = [r[:col] + r[col + 1 :] for r in table.rows]
        data = table.csv(header=header).encode()
        return Broken(how, data, [f"'{table.names[col]}'"], False, schema)
    if how == "extra":
        extra = draw(NAME.filter(lambda n: n not in table.names))
        table.rows = [[*r, "1"] for r in table.rows]
        data = table.csv(header=[*table.names, extra]).encode()
        return Broken(how, data, [f"'{extra}'"], False, schema)
    if how == "few_rows":
        table.rows = table.rows[: draw(st.integers(1, 9))]
        return Broken(how, table.csv().encode(), ["data rows"], True, schema)
    data = draw(st.binary(min_size=1, max_size=300))
    return Broken("bytes", data, [], False, schema)


# -- configs: every key of the schema, broken by type, range or name ----------------------

TOML_TYPES = {
    "string": st.text(max_size=8),
    "integer": st.integers(-(2**63), 2**63 - 1),
    "number": st.floats(allow_nan=True, allow_infinity=True),
    "boolean": st.booleans(),
    "array": st.lists(st.integers(-5, 5), min_size=1, max_size=3),
    "object": st.dictionaries(NAME, st.integers(-5, 5), min_size=1, max_size=2),
}


def _leaves() -> list[tuple[tuple, dict[str, Any]]]:
    """(path in PARTY.toml, JSON schema) of every key the config schema declares."""
    out = []
    run = TypeAdapter(RunConfig).json_schema()
    for key, prop in run["properties"].items():
        if key in sections(RunConfig):
            sub = run["$defs"][prop["$ref"].rsplit("/", 1)[1]]
            out += [(("run", key, k), p) for k, p in sub["properties"].items()]
        else:
            out.append((("run", key), prop))
    for table, cls in PARTY_FILE_TABLES.items():
        where: tuple = ("peers", 0) if table == "peers" else (table,)
        out += [((*where, k), p) for k, p in TypeAdapter(cls).json_schema()["properties"].items()]
    return out


LEAVES = _leaves()


def _types(prop: dict[str, Any]) -> set[str]:
    options = prop.get("anyOf", [prop])
    kinds = {o.get("type") for o in options if o.get("type") != "null"}
    return kinds | ({"integer"} if "number" in kinds else set())


def _dotted(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


@st.composite
def bad_values(draw, prop: dict[str, Any]) -> Any:
    """A TOML value the key's schema refuses: another type, or outside its range."""
    options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
    numeric = [o for o in options if o.get("type") in ("integer", "number")]
    if numeric and draw(st.booleans()):
        o = numeric[0]
        integer = o["type"] == "integer"
        beyond = [_past(o[key], key, integer) for key in _BOUNDS if key in o]
        beyond = [s for s in beyond if s is not None]
        if beyond:
            return draw(st.one_of(beyond))
        if not integer:
            return draw(st.sampled_from([float("inf"), float("-inf"), float("nan")]))
    wrong = sorted(set(TOML_TYPES) - _types(prop))
    return draw(TOML_TYPES[draw(st.sampled_from(wrong))])


_BOUNDS = ("exclusiveMinimum", "minimum", "exclusiveMaximum", "maximum")
TOML_INT = (-(2**63), 2**63 - 1)


def _past(bound: float, key: str, integer: bool):
    """Values on the wrong side of one JSON-schema bound; None if TOML cannot write any."""
    below, inclusive = "inimum" in key, key in ("minimum", "maximum")
    if integer:
        edge = (bound - 1 if below else bound + 1) if inclusive else bound
        low, high = (TOML_INT[0], edge) if below else (edge, TOML_INT[1])
        return st.integers(low, high) if low <= high else None
    if below:
        return st.floats(max_value=bound, exclude_max=inclusive, allow_nan=False)
    return st.floats(min_value=bound, exclude_min=inclusive, allow_nan=False)


def _set(doc: dict[str, Any], path: tuple, value: Any) -> None:
    node = doc
    for part in path[:-1]:
        node = node[part] if isinstance(node, list) else node.setdefault(part, {})
    node[path[-1]] = value


@dataclass
class BrokenConfig:
    label: str
    text: str
    named: list[str]


@st.composite
def broken_configs(draw, base: dict[str, Any], how: str, leaf: int = 0) -> BrokenConfig:
    """``how``: "value" (key ``LEAVES[leaf]`` gets a bad value), "unknown" (a key no table
    has), "table" (an unknown table) or "toml" (broken syntax)."""
    doc = json.loads(json.dumps(base))
    if how == "value":
        path, prop = LEAVES[leaf]
        if path[0] == "tls":
            doc["tls"] = {"ca": "ca.pem", "cert": "me.pem", "key": "me.key"}
        value = draw(bad_values(prop))
        _set(doc, path, value)
        return BrokenConfig(f"{_dotted(path)}={value!r:.40}", tomli_w.dumps(doc), [_dotted(path)])
    if how == "unknown":
        tables = [("party",), ("peers", 0), ("run",), ("run", "network"), ("run", "mpc")]
        where = draw(st.sampled_from(tables))
        path = (*where, "zz_" + draw(NAME))
        _set(doc, path, 1)
        return BrokenConfig(f"unknown {_dotted(path)}", tomli_w.dumps(doc), [_dotted(path)])
    if how == "table":
        name = "zz_" + draw(NAME)
        doc[name] = {"a": 1}
        return BrokenConfig(f"table {name}", tomli_w.dumps(doc), [f"'{name}'"])
    text = tomli_w.dumps(doc)
    at = draw(st.integers(0, len(text) - 1))
    junk = draw(st.sampled_from(["[", "=", '"', "\x00", "[[run]]\n", "= 1\n", "\\"]))
    broken = text[:at] + junk + text[at:]
    try:
        tomllib.loads(broken)
    except tomllib.TOMLDecodeError:
        return BrokenConfig("toml", broken, ["not valid TOML"])
    return BrokenConfig("toml-truncated", text[: text.index("[run]")] + "[run\n", ["TOML"])


@dataclass
class BrokenSchema:
    label: str
    text: str
    named: list[str]


SCHEMA_WAYS = {  # way -> the kind of the table's first column it needs
    **dict.fromkeys(("kind", "kind_type", "unknown_key", "missing_kind", "target"), None),
    **dict.fromkeys(("version", "toml", "categories_on_number", "bounds_on_category"), None),
    **dict.fromkeys(("min_above_max", "int_bound", "span", "nonfinite", "fraction"), "numeric"),
    **dict.fromkeys(("no_categories", "dup_categories", "number_categories"), "categorical"),
}


@st.composite
def broken_schemas(draw, how: str) -> tuple[Table, BrokenSchema]:
    table = draw(tables(first_kind=SCHEMA_WAYS[how]))
    return table, draw(_broken_schema(table, how))


@st.composite
def _broken_schema(draw, table: Table, how: str) -> BrokenSchema:
    doc = table.schema()
    columns = doc["columns"]
    i = draw(st.integers(0, len(columns) - 1))
    col = columns[i]
    numeric = [c for c in columns if c["kind"] in ("integer", "numeric")]
    named = [f"'{col['name']}'"]
    if how == "kind":
        col["kind"] = draw(st.sampled_from(["text", "float", "Integer", ""]))
    elif how == "kind_type":
        col["kind"] = draw(st.sampled_from([3, True, ["integer"]]))
    elif how == "unknown_key":
        col["colour"] = "blue"
        named.append("colour")
    elif how == "missing_kind":
        del col["kind"]
        named = [f"columns[{i + 1}].kind"]
    elif how == "target":
        doc["target"] = "zz_" + draw(NAME)
        named = ["'target'"]
    elif how == "version":
        doc["version"] = draw(st.sampled_from([0, 2, 7, "1"]))
        named = ["'version'"]
    elif how == "categories_on_number":
        col = draw(st.sampled_from(columns))
        if col["kind"] == "categorical":
            col["kind"] = "integer"
            col |= {"min": 0, "max": 5}
        else:
            col["categories"] = ["a", "b"]
        named = [f"'{col['name']}'", "categories"]
    elif how == "bounds_on_category":
        col = draw(st.sampled_from(columns))
        if col["kind"] in ("integer", "numeric"):
            del col["max"]
            named = [f"'{col['name']}'", "'max'"]
        else:
            col |= {"min": 0, "max": 1}
            named = [f"'{col['name']}'", "min"]
    elif how == "toml":
        text = tomli_w.dumps(doc)
        return BrokenSchema(how, text[: draw(st.integers(0, 5))] + "[[columns]\n", ["TOML"])
    elif how in ("no_categories", "dup_categories", "number_categories"):
        name = draw(st.sampled_from(sorted(table.categories)))
        col = next(c for c in columns if c["name"] == name)
        col["categories"] = {
            "no_categories": [],
            "dup_categories": [*col["categories"], col["categories"][0]],
            "number_categories": [1, 2],
        }[how]
        named = [f"'{name}'", "categories"]
    else:
        col = draw(st.sampled_from(numeric))
        named = [f"'{col['name']}'"]
        if how == "min_above_max":
            col["min"], col["max"] = col["max"], col["min"]
        elif how == "int_bound":
            col["kind"] = "integer"
            col["min"], col["max"] = 0, draw(st.sampled_from([2**53 + 1, 10**17, 2**63 - 1]))
        elif how == "span":
            col["kind"] = "numeric"
            col["min"], col["max"] = -1e308, draw(st.sampled_from([1e308, 1.7976931348623157e308]))
        elif how == "nonfinite":
            col[draw(st.sampled_from(["min", "max"]))] = draw(
                st.sampled_from([float("inf"), float("-inf"), float("nan")])
            )
        else:
            col["kind"] = "integer"
            col["max"] = 2.5
    return BrokenSchema(how, tomli_w.dumps(doc), named)


# -- running the cases --------------------------------------------------------------------


def _draw(strategy, n: int) -> list:
    """``n`` seeded examples of ``strategy`` (collected first, then run in one worker)."""
    examples: list = []
    if n == 0:
        return examples

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(strategy)
    def collect(example):
        examples.append(example)

    collect()
    return examples


@dataclass
class Case:
    id: str
    argv: list[str]
    expect: int
    named: list[str]
    absent: list[str] = field(default_factory=list)  # paths the command must not create


def _party_toml(data: Path, schema: Path) -> dict[str, Any]:
    return {
        "party": {
            "name": "alice",
            "listen": "127.0.0.1:0",
            "data": str(data),
            "schema": str(schema),
            "out": str(data.parent / "party-out"),
        },
        "peers": [
            {"name": "bob", "address": "127.0.0.1:1", "role": "data"},
            {"name": "dealer", "address": "127.0.0.1:2", "role": "dealer"},
        ],
        # should anything pass by mistake, it fails within seconds instead of waiting
        "run": {"mode": "mpc", "network": {"connect_timeout_s": 2.0, "peer_timeout_s": 5.0}},
    }


def _csv_cases(root: Path, broken: list[Broken]) -> list[Case]:
    cases = []
    for n, b in enumerate(broken):
        folder = root / f"csv{n}"
        folder.mkdir()
        data = folder / "site.csv"
        data.write_bytes(b.content)
        table_schema = folder / "schema.toml"
        table_schema.write_text(tomli_w.dumps(b.schema), encoding="utf-8")
        party = folder / "party.toml"
        party.write_text(tomli_w.dumps(_party_toml(data, table_schema)), encoding="utf-8")
        named = [str(data), *b.named]
        out = str(folder / "out")  # one folder each command, so a stray one names its culprit
        cases += [
            Case(
                f"train {b.label}",
                [
                    "train",
                    "--data",
                    str(data),
                    "--schema",
                    str(table_schema),
                    "--out",
                    out + "-train",
                ],
                2,
                named,
                [out + "-train"],
            ),
            Case(
                f"simulate {b.label}",
                [
                    "simulate",
                    "--data",
                    str(data),
                    "--schema",
                    str(table_schema),
                    "--parties",
                    "2",
                    "--mode",
                    "plaintext",
                    "--out",
                    out + "-simulate",
                    "--quiet",
                ],
                2,
                named,
                [out + "-simulate"],
            ),
            Case(
                f"party {b.label}",
                ["party", "--config", str(party)],
                2,
                named,
                [str(folder / "party-out")],
            ),
        ]
        if b.bare:
            cases.append(
                Case(
                    f"train-no-schema {b.label}",
                    ["train", "--data", str(data), "--out", out],
                    2,
                    named,
                    [out],
                )
            )
        if b.bare or b.infer_fails:
            drafted = str(folder / "drafted.toml")
            expect = 2 if b.infer_fails else 0
            cases.append(
                Case(
                    f"schema-infer {b.label}",
                    ["schema", "infer", str(data), "-o", drafted],
                    expect,
                    named if expect else [],
                    [drafted] if expect else [],
                )
            )
    return cases


def _config_cases(root: Path, table: Table, broken: list[BrokenConfig]) -> list[Case]:
    folder = root / "configs"
    folder.mkdir()
    data, table_schema = folder / "site.csv", folder / "schema.toml"
    data.write_text(table.csv(), encoding="utf-8")
    table_schema.write_text(tomli_w.dumps(table.schema()), encoding="utf-8")
    cases = []
    for n, b in enumerate(broken):
        path = folder / f"party{n}.toml"
        path.write_text(
            b.text.replace("@DATA@", str(data)).replace("@SCHEMA@", str(table_schema)),
            encoding="utf-8",
        )
        cases.append(
            Case(
                f"config {b.label}",
                ["party", "--config", str(path)],
                2,
                [str(path), *b.named],
                [str(folder / "party-out")],
            )
        )
    return cases


def _schema_cases(root: Path, pairs: list[tuple[Table, BrokenSchema]]) -> list[Case]:
    cases = []
    for n, (table, b) in enumerate(pairs):
        folder = root / f"schema{n}"
        folder.mkdir()
        data, table_schema = folder / "site.csv", folder / "schema.toml"
        data.write_text(table.csv(), encoding="utf-8")
        table_schema.write_text(b.text, encoding="utf-8")
        party = folder / "party.toml"
        party.write_text(tomli_w.dumps(_party_toml(data, table_schema)), encoding="utf-8")
        named, out = [str(table_schema), *b.named], str(folder / "out")
        cases += [
            Case(
                f"train schema {b.label}",
                ["train", "--data", str(data), "--schema", str(table_schema), "--out", out],
                2,
                named,
                [out],
            ),
            Case(f"party schema {b.label}", ["party", "--config", str(party)], 2, named),
        ]
    return cases


def _run_worker(root: Path, cases: list[Case]) -> list[dict[str, Any]]:
    cases_path, results_path = root / "cases.json", root / "results.json"
    cases_path.write_text(json.dumps([{"id": c.id, "argv": c.argv} for c in cases]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(cases_path), str(results_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    report = json.loads(results_path.read_text())
    return report["cases"], report["baseline_rss_mib"], cpu


def _fuzz(tmp_path: Path, per_way: int, n_wide: int, label: str):
    """``per_way`` inputs for every way of breaking a CSV, a schema and each config key."""
    broken = [b for how, kind in CSV_WAYS for b in _draw(broken_csvs(how, kind), per_way)]
    broken += _draw(broken_csvs("cell", "integer", wide=True), n_wide)
    config_table = _draw(tables(), 1)[0]
    base = _party_toml(Path("@DATA@"), Path("@SCHEMA@"))
    base["party"]["out"] = "party-out"
    configs = [
        c
        for leaf in range(len(LEAVES))
        for c in _draw(broken_configs(base, "value", leaf), per_way)
    ]
    configs += [
        c for how in ("unknown", "table", "toml") for c in _draw(broken_configs(base, how), per_way)
    ]
    schemas = [pair for how in SCHEMA_WAYS for pair in _draw(broken_schemas(how), per_way)]
    cases = (
        _csv_cases(tmp_path, broken)
        + _config_cases(tmp_path, config_table, configs)
        + _schema_cases(tmp_path, schemas)
    )
    results, warm, cpu_seconds = _run_worker(tmp_path, cases)
    assert len(results) == len(cases)
    tracebacks, wrong_code, unnamed, created, failures = 0, 0, 0, 0, []
    for case, result in zip(cases, results):
        problems = []
        if result["traceback"]:
            tracebacks += 1
            problems.append("traceback")
        if result["code"] != case.expect:
            wrong_code += 1
            problems.append(f"exit {result['code']}, expected {case.expect}")
        missing = [p for p in case.named if p not in result["stderr"]]
        if missing:
            unnamed += 1
            problems.append(f"message lacks {missing}")
        left = [p for p in case.absent if Path(p).exists()]
        if left:
            created += 1
            problems.append(f"created {left}")
        if problems:
            failures.append(f"{case.id}: {'; '.join(problems)}\n  {result['stderr'][-600:]}")
    peak = max(r["peak_rss_mib"] for r in results)
    print(
        f"\nfuzz ({label}): {len(cases)} inputs tried through the command line "
        f"({len(broken)} CSV files, {len(schemas)} schemas, {len(configs)} configs); "
        f"tracebacks {tracebacks}, wrong exit codes {wrong_code}, culprit not named "
        f"{unnamed}, outputs created {created}; peak memory {peak:.0f} MiB "
        f"({peak - warm:+.0f} MiB over the worker after its imports); "
        f"worker CPU {cpu_seconds:.1f} s, slowest case {max(r['seconds'] for r in results):.2f} s"
    )
    assert not failures, f"{len(failures)} failing case(s):\n" + "\n".join(failures[:15])
    assert peak - warm < MEMORY_GROWTH_BOUND_MIB


def test_fuzz_inputs_quick(tmp_path):
    _fuzz(tmp_path, per_way=2, n_wide=2, label="quick")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fuzz_inputs_large(tmp_path):
    _fuzz(tmp_path, per_way=20, n_wide=10, label="large")
