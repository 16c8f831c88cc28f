"""When CrypTen is patched: never at import, inside a patched block (a session holds one)
only, and after the block every patched attribute is CrypTen's own object again.

No fixture patches CrypTen in this module: each test starts from CrypTen as shipped.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from smpc_synth.crypten_backend import compat

crypten = compat.import_crypten()

# What a process has made of CrypTen: for every crypten module loaded, and every class
# defined in one, what each attribute is (a function by its code's file and line, a class
# or module by name, a dict by its keys and values, a scalar by value, anything else by type).
_FINGERPRINT = """
import json, sys, types


def describe(value):
    if isinstance(value, (staticmethod, classmethod)):
        return f"{type(value).__name__}({describe(value.__func__)})"
    if isinstance(value, property):
        return "property" + repr([describe(f) for f in (value.fget, value.fset, value.fdel)])
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__}"
    if isinstance(value, type):
        return f"class {value.__module__}.{value.__qualname__}"
    code = getattr(value, "__code__", None)
    if code is not None:
        return f"{value.__qualname__} at {code.co_filename}:{code.co_firstlineno}"
    func = getattr(value, "__func__", None)
    if func is not None:
        return f"bound {describe(func)}"
    if callable(value) and hasattr(value, "__qualname__"):  # a builtin
        return f"{getattr(value, '__module__', None)}.{value.__qualname__}"
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return repr(value)
    return f"a {type(value).__module__}.{type(value).__qualname__}"


def members(namespace):
    out = {}
    for name, value in namespace.items():
        if name == "__builtins__":
            continue
        if isinstance(value, dict):
            out[name] = sorted(f"{describe(key)}: {describe(item)}" for key, item in value.items())
        else:
            out[name] = describe(value)
    return out


def fingerprint():
    state = {}
    names = sorted(n for n in sys.modules if n == "crypten" or n.startswith("crypten."))
    for name in names:
        namespace = vars(sys.modules[name])
        state[name] = members(namespace)
        for value in list(namespace.values()):
            if isinstance(value, type) and value.__module__ == name:
                state[f"{name}:{value.__qualname__}"] = members(dict(vars(value)))
    state["crypten.cfg"] = sorted(vars(sys.modules["crypten"].cfg))
    return {"modules": names, "state": state}
"""

# every module of smpc_synth but __main__ (importing it runs the command line)
_IMPORT_EVERYTHING = """
import importlib, pkgutil
import smpc_synth

imported = []
for info in pkgutil.walk_packages(smpc_synth.__path__, "smpc_synth."):
    if info.name.rpartition(".")[2] != "__main__":
        importlib.import_module(info.name)
        imported.append(info.name)
result = fingerprint()
result["imported"] = imported
print(json.dumps(result))
"""

_IMPORT_CRYPTEN_ONLY = """
import importlib
from smpc_synth.crypten_backend.compat import _alias_onnx_registration

_alias_onnx_registration()  # torch's module table only: crypten cannot import without it
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
print(json.dumps(fingerprint()))
"""


def _python(code: str, *args: str, timeout: float = 600) -> dict:
    """Run ``code`` in a fresh interpreter; what it printed last, as JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_every_module_leaves_crypten_as_shipped():
    everything = _python(_FINGERPRINT + _IMPORT_EVERYTHING)
    imported = everything["imported"]
    assert {
        "smpc_synth.crypten_backend.compat",
        "smpc_synth.mpc.session",
        "smpc_synth.train.mpc.twins",
    } <= set(imported)
    assert len(imported) > 50  # the whole package was walked
    modules = everything["modules"]
    assert {"crypten.mpc.mpc", "crypten.nn.onnx_converter", "crypten.gradients"} <= set(modules)
    alone = _python(_FINGERPRINT + _IMPORT_CRYPTEN_ONLY, json.dumps(modules))
    assert alone["modules"] == modules
    differences = {}  # "owner.attribute": (as shipped, after importing everything)
    for owner, members in everything["state"].items():
        shipped = alone["state"][owner]
        if isinstance(members, dict):
            for name in members.keys() | shipped.keys():
                if members.get(name) != shipped.get(name):
                    differences[f"{owner}.{name}"] = (shipped.get(name), members.get(name))
        elif members != shipped:
            differences[owner] = (shipped, members)
    assert not differences, json.dumps(differences, indent=1)[:4000]


# --- in this process ---------------------------------------------------------------------------


def _wiring(provider: str, transport: str) -> SimpleNamespace:
    return SimpleNamespace(provider=provider, transport=transport, dealer_provider=object())


def _holding() -> dict[compat.Patch, object]:
    return {patch: compat.holding(patch) for patch in compat.PATCHES}


def _in(shipped: dict, *, when: tuple[str | None, ...] = (None,)) -> set[compat.Patch]:
    """The entries whose owner holds something other than CrypTen's own object now."""
    now = _holding()
    changed = {patch for patch in compat.PATCHES if now[patch] is not shipped[patch]}
    for patch in compat.PATCHES:  # and every one expected is ours, not someone else's
        if patch.when in when:
            assert patch in changed, (patch.owner, patch.attribute)
    return changed


def _entries(*when: str | None) -> set[compat.Patch]:
    return {patch for patch in compat.PATCHES if patch.when in when}


@pytest.fixture
def shipped():
    """What CrypTen's owners hold before any block: asserted to be CrypTen's own."""
    assert not compat._INSTALLED and not compat.shipped()
    before = _holding()
    for patch, value in before.items():
        code = getattr(getattr(value, "__func__", value), "__code__", None)
        assert code is None or "smpc_synth" not in code.co_filename, patch
        assert "smpc_synth" not in str(getattr(value, "__module__", "")), patch
    yield before
    after = _holding()
    assert all(after[patch] is before[patch] for patch in compat.PATCHES)
    assert "_sections" not in vars(crypten.cfg)


def test_the_table_names_each_attribute_once_and_each_exists():
    from smpc_synth.mpc.dealer.provider import DealerProvider

    keys = [(patch.owner, patch.attribute) for patch in compat.PATCHES]
    assert len(keys) == len(set(keys))
    inherited = {
        (patch.owner, patch.attribute)
        for patch in compat.PATCHES
        if compat.holding(patch) is compat.ABSENT
    }
    assert inherited == {
        ("crypten.nn.onnx_converter:ONNX_TO_CRYPTEN", "Identity"),  # a key CrypTen lacks
        ("crypten.mpc:__SUPPORTED_PROVIDERS", DealerProvider.NAME),  # the dealer's key
        ("crypten.mpc:MPCTensor", "relu"),  # inherited from CrypTensor
    }
    assert {patch.why for patch in compat.PATCHES} == {"needed", "speed", "protocol"}


def test_every_object_an_entry_imports_on_install_exists():
    """The entries import our protocols by name when a session installs them (out of the
    import contract's sight): each name must still lead to an object after a move."""
    assert {module for module, _ in compat.LAZY} >= {
        "smpc_synth.crypten_backend.arithmetic",
        "smpc_synth.crypten_backend.communicator",
        "smpc_synth.mpc.primitives.beaver",
        "smpc_synth.mpc.primitives.compare",
    }
    for module, name in compat.LAZY:
        assert callable(getattr(importlib.import_module(module), name)), (module, name)


def test_the_docs_list_every_entry_of_the_table():
    doc = Path(__file__).resolve().parents[3] / "docs" / "crypten-compat.md"
    row = re.compile(r"^\| `([\w.:]+)` \| `(\w+)` \| (\w+)( \(kept\))? \| (\w+) \|")
    listed = {match.groups() for match in map(row.match, doc.read_text().splitlines()) if match}
    assert listed == {
        (p.owner, p.attribute, p.why, " (kept)" if p.wiring else None, p.when or "always")
        for p in compat.PATCHES
    }


def test_patches_are_in_only_inside_a_block_and_nest(shipped):
    with compat.patched_crypten():
        assert _in(shipped) == _entries(None)
        with compat.patched_crypten():  # nested: nothing more, and nothing leaves with it
            assert _in(shipped) == _entries(None)
        assert _in(shipped) == _entries(None)
        assert type(crypten.cfg.functions).__name__ == "_Section"
    assert _in(shipped, when=()) == set()
    with compat.patched_crypten():  # and in again
        assert _in(shipped) == _entries(None)


@pytest.mark.parametrize(
    ("provider", "transport"), [("dealer", "grpc"), ("dealer", "gloo"), ("tfp", "gloo")]
)
def test_a_sessions_entries_leave_with_its_block(shipped, provider, transport):
    wiring = _wiring(provider, transport)
    own = _entries(provider, transport)
    with compat.patched_crypten():
        with compat.patched_crypten(wiring):
            assert _in(shipped, when=(None, provider, transport)) == _entries(None) | own
            with (
                pytest.raises(RuntimeError, match="already"),
                compat.patched_crypten(_wiring("dealer", "grpc")),
            ):
                pass
        assert _in(shipped) == _entries(None)
    with compat.patched_crypten(wiring):  # a session's block alone brings every entry too
        assert _in(shipped, when=(None, provider, transport)) == _entries(None) | own
    assert _in(shipped, when=()) == set()


def test_shipped_crypten_restores_cryptens_objects_exactly(shipped):
    needed = {patch for patch in compat.PATCHES if not patch.as_shipped}
    with compat.patched_crypten(_wiring("dealer", "grpc")):
        with compat.shipped_crypten():
            assert compat.shipped()
            now = _holding()
            for patch in compat.PATCHES:
                if patch.as_shipped:
                    assert now[patch] is shipped[patch], (patch.owner, patch.attribute)
            with compat.shipped_crypten():  # nested
                assert _in(shipped, when=()) == needed & _entries(None, "dealer", "grpc")
            assert _in(shipped, when=()) == needed & _entries(None, "dealer", "grpc")
            assert type(crypten.cfg.functions).__name__ == "DictConfig"
        assert not compat.shipped()
        assert _in(shipped, when=(None, "dealer", "grpc")) == _entries(None, "dealer", "grpc")
    # a session that starts inside the block starts as shipped
    with compat.shipped_crypten(), compat.patched_crypten(_wiring("dealer", "grpc")):
        assert _in(shipped, when=()) == needed & _entries(None, "dealer", "grpc")


def test_entries_leave_when_the_block_fails(shipped):
    with pytest.raises(KeyError), compat.patched_crypten(_wiring("dealer", "grpc")):
        assert _in(shipped, when=(None, "dealer", "grpc"))
        raise KeyError


def test_blocks_in_threads_leave_crypten_as_shipped(shipped):
    failures = []

    def enter_and_leave():
        try:
            for _ in range(200):
                with compat.patched_crypten():
                    assert compat.holding(compat.PATCHES[0]) is not shipped[compat.PATCHES[0]]
        except BaseException as err:  # reported below
            failures.append(err)

    threads = [threading.Thread(target=enter_and_leave) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures


# --- a real session in a fresh interpreter -----------------------------------------------------

_SESSION = """
import json
import torch
from smpc_synth.crypten_backend import compat
from smpc_synth.mpc.session import crypten, start_crypten, stop_crypten
from smpc_synth.net.addresses import free_ports

torch.set_num_threads(1)
shipped = {patch: compat.holding(patch) for patch in compat.PATCHES}


def patched():
    return sorted(
        f"{patch.owner}.{patch.attribute}"
        for patch in compat.PATCHES
        if compat.holding(patch) is not shipped[patch]
    )


rendezvous = f"tcp://127.0.0.1:{free_ports(1)[0]}"
start_crypten(None, ("alice",), 0, "tfp", "gloo", insecure_dev=True, rendezvous=rendezvous)
during = patched()
communicator = type(crypten.communicator.get()).__name__
value = crypten.cryptensor(torch.tensor([-1.5, 2.0])).relu().get_plain_text().tolist()
stop_crypten()
print(json.dumps({"during": during, "after": patched(), "communicator": communicator,
                  "value": value, "cached": "_sections" in vars(crypten.cfg)}))
"""


def test_a_session_has_the_patches_in_and_takes_them_out():
    result = _python(_SESSION, timeout=300)
    expected = sorted(f"{p.owner}.{p.attribute}" for p in _entries(None, "tfp", "gloo"))
    assert result["during"] == expected
    assert result["communicator"] == "GlooCommunicator"  # ours, built by CrypTen's own init
    assert result["value"] == pytest.approx([0.0, 2.0], abs=1e-4)
    assert result["after"] == [] and not result["cached"]
