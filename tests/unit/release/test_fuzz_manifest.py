"""Fuzzing ``smpc-synth verify``: manifests made from a real signed one by replacing,
deleting or adding values anywhere, or by damaging its text, fed to the real command.

Each must verify (only if unchanged), fail a named check (exit 1), or be refused naming the
key, the file or the JSON error (exit 2); never another code, never a traceback, memory
bounded. The test prints inputs tried, outcomes, tracebacks, wrong codes and peak memory.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawpeer import TracebackCounter
from signed_runs import release_signed_run

from smpc_synth.cli import main

# what a refusal with exit 2 must name
NAMED = ("key '", "is not valid JSON", "not a smpc-synth manifest", "larger than")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    release_signed_run(run, pd.DataFrame({"x": rng.normal(size=20)}), "seed = 0\n")
    return run


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
        st.sampled_from(["../../etc/passwd", "/etc/passwd", "certs/ca.key", "a" * 64, "0" * 64]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a JSON value (keys and indices), the value itself included."""
    out = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            out += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            out += _paths(inner, (*prefix, index))
    return out


@st.composite
def manifest_texts(draw, original: dict) -> str:
    """The text of a manifest: the original, edited in one to three places, or damaged."""
    how = draw(st.sampled_from(["edit", "edit", "edit", "text", "nest", "constant"]))
    manifest = copy.deepcopy(original)
    if how == "edit":
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(_paths(manifest)))
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if not path:
                manifest = draw(json_values) if action == "replace" else manifest
                continue
            parent = manifest
            for step in path[:-1]:
                parent = parent[step]
            if action == "replace":
                parent[path[-1]] = draw(json_values)
            elif action == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(max_size=6))] = draw(json_values)
            if not isinstance(manifest, dict | list):
                break
        return json.dumps(manifest)
    text = json.dumps(original, indent=2)
    if how == "nest":
        depth = draw(st.integers(100, 100_000))
        return text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    if how == "constant":
        return text.replace(
            '"quality_score": 0.9',
            f'"quality_score": {draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))}',
        )
    start = draw(st.integers(0, len(text)))
    end = draw(st.integers(start, min(len(text), start + 20)))
    return text[:start] + draw(st.text(max_size=8)) + text[end:]


def _verify(path: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["verify", str(path)])
    return code, out.getvalue() + err.getvalue()


@pytest.mark.parametrize(
    "examples", [150, pytest.param(1500, marks=[pytest.mark.slow, pytest.mark.timeout(3600)])]
)
def test_fuzzed_manifests_exit_1_or_2_naming_what_fails(run_dir, capsys, examples):
    original = json.loads((run_dir / "manifest.json").read_text())
    target = run_dir / "fuzzed.json"
    target.write_text(json.dumps(original))
    assert _verify(target)[0] == 0  # the unedited manifest verifies, from any file name
    stats: Counter = Counter()
    peak = 0

    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(manifest_texts(original))
    def run(text):
        nonlocal peak
        stats["inputs"] += 1
        target.write_text(text)
        tracemalloc.start()
        try:
            code, output = _verify(target)
            peak = max(peak, tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        stats[f"exit {code}"] += 1
        unchanged = _same_json(text, original)
        right = (
            (
                (code == 0 and unchanged)
                or (code == 1 and not unchanged and "verification FAILED" in output)
                or (code == 2 and any(named in output for named in NAMED))
            )
            and "unexpected" not in output
            and "Traceback" not in output
        )
        stats["wrong"] += not right
        assert right, (code, output[-600:])

    with TracebackCounter() as tracebacks:
        run()
    with capsys.disabled():
        print(
            f"\nfuzz manifests: {stats['inputs']} inputs tried (exit 0: {stats['exit 0']}, "
            f"exit 1: {stats['exit 1']}, exit 2: {stats['exit 2']}), tracebacks "
            f"{len(tracebacks.records)}, wrong codes {stats['wrong']}, peak traced memory "
            f"{peak / 2**20:.1f} MiB"
        )
    assert not tracebacks.records and stats["wrong"] == 0
    assert stats["exit 1"] > 0 and stats["exit 2"] > 0
    assert peak < 256 * 2**20


def _same_json(text: str, original: dict) -> bool:
    try:
        return json.loads(text) == original
    except (ValueError, RecursionError):
        return False
