"""CrypTen and TenSEAL work in this environment, and each CrypTen fix is both working and needed.

Every fix in :mod:`smpc_synth.crypten_backend.compat` has two tests: one that fails if the fix stops
working, one that fails once torch no longer needs it (then delete the fix). The "without the
fix" cases run in a fresh interpreter so that nothing patched here leaks into them. The tests
here run with the fixes in (``compat.patched_crypten``, as a session has them);
``tests/unit/crypten_backend/test_compat_scope.py`` checks when they are in and out.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from smpc_synth.crypten_backend.compat import import_crypten

torch.set_num_threads(1)
crypten = import_crypten()
pytestmark = pytest.mark.usefixtures("crypten_patches")

OLD_REGISTRATION = "torch.onnx._internal.registration"


def _python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (one thread) and capture its output."""
    prelude = "import torch\ntorch.set_num_threads(1)\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


# in a fresh interpreter: crypten importable, and only the entries of compat's table named
_ONLY = """
from smpc_synth.crypten_backend import compat
crypten = compat.import_crypten()


def only(*names):
    for patch in compat.PATCHES:
        if patch.when is None and f"{patch.owner}.{patch.attribute}" in names:
            compat._install(patch, None)
"""
_LOADS = ("crypten.load", "crypten.mpc.provider.provider.torch")
_EXPORT = "crypten.nn.onnx_converter._export_pytorch_model"


def _small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


# --- a 2-process CrypTen job (stock gloo communicator) --------------------------------------

_X = torch.linspace(-3.0, 3.0, 24).reshape(4, 6)
_W = torch.linspace(-1.0, 1.0, 18).reshape(6, 3)


@crypten.mpc.run_multiprocess(world_size=2)
def _two_party_job(cache_dir: str) -> dict[str, list]:
    torch.set_num_threads(1)
    x = crypten.cryptensor(_X, src=0)
    w = crypten.cryptensor(_W, src=1)
    provider = crypten.mpc.get_default_provider()
    provider.trace()
    out = {
        "matmul": x.matmul(w).get_plain_text(),
        "relu": x.relu().get_plain_text(),
        "sigmoid": x.sigmoid().get_plain_text(),
    }
    provider.trace(False)
    provider.fill_cache()
    provider.save_cache(cache_dir)
    # plain lists: a tensor put on the result queue dies with its (finished) process
    return {op: value.tolist() for op, value in out.items()}


@pytest.fixture(scope="module")
def two_party_run(tmp_path_factory) -> tuple[list[dict[str, list]], str]:
    cache_dir = str(tmp_path_factory.mktemp("tuple_cache"))
    results = _two_party_job(cache_dir)
    assert results is not None, "a CrypTen party failed; see the log above"
    return results, cache_dir


@pytest.mark.parametrize(
    ("op", "expected", "atol"),
    [
        ("matmul", lambda: _X @ _W, 5e-3),
        ("relu", lambda: torch.relu(_X), 1e-3),
        ("sigmoid", lambda: torch.sigmoid(_X), 1e-2),
    ],
)
def test_two_party_crypten_matches_plaintext(two_party_run, op, expected, atol):
    results, _ = two_party_run
    assert len(results) == 2
    for party_result in results:
        torch.testing.assert_close(torch.tensor(party_result[op]), expected(), atol=atol, rtol=0)


# --- fix 1: the old ONNX registration import path ---------------------------------------------


def test_onnx_registration_alias_works():
    proc = _python(
        """
        from smpc_synth.crypten_backend.compat import import_crypten
        crypten = import_crypten()
        import crypten.nn.onnx_converter as conv
        print(type(conv.registry).__name__)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_onnx_registration_alias_still_needed():
    proc = _python(f"import {OLD_REGISTRATION}")
    assert proc.returncode != 0
    assert "ModuleNotFoundError" in proc.stderr
    proc = _python("import crypten")
    assert proc.returncode != 0, "crypten imports without the alias: remove the fix"


# --- fix 2: torch.load(weights_only=True) refuses CrypTen's own files -------------------------


def _tuple_cache_file(cache_dir: str) -> str:
    path = os.path.join(cache_dir, "tuple_cache-0")
    assert os.path.exists(path), "the provider wrote no tuple cache"
    return path


def test_trusted_load_reads_provider_cache(two_party_run):
    _, cache_dir = two_party_run
    provider_module = sys.modules["crypten.mpc.provider.provider"]
    cache = provider_module.torch.load(_tuple_cache_file(cache_dir))
    assert isinstance(cache, dict) and cache
    triples = next(iter(cache.values()))
    assert isinstance(triples, list) and triples


def test_trusted_load_reads_crypten_files(tmp_path):
    path = tmp_path / "obj.pt"
    obj = {"weights": [torch.ones(2), torch.zeros(3)], "size": torch.Size([2, 3])}
    torch.save(obj, path)  # what crypten.save writes, without needing a session
    loaded = crypten.load(path)
    assert torch.equal(loaded["weights"][0], obj["weights"][0])
    assert loaded["size"] == obj["size"]


def test_trusted_load_still_needed(two_party_run):
    _, cache_dir = two_party_run
    with pytest.raises(pickle.UnpicklingError):
        torch.load(_tuple_cache_file(cache_dir))


# --- fix 3: from_pytorch needs the TorchScript ONNX exporter ----------------------------------


def test_from_pytorch_works():
    model = _small_model()
    dummy = torch.zeros(1, 4)
    converted = crypten.nn.from_pytorch(model, dummy)
    x = torch.randn(5, 4)
    torch.testing.assert_close(converted(x), model(x), atol=1e-5, rtol=1e-5)


def test_from_pytorch_export_fix_still_needed():
    proc = _python(
        _ONLY
        + textwrap.dedent(
            f"""
            only(*{_LOADS!r})
            model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
            try:
                crypten.nn.from_pytorch(model, torch.zeros(1, 4))
            except Exception as err:
                print("FAILED", type(err).__name__)
            else:
                print("CONVERTED")
            """
        )
    )
    assert proc.returncode == 0, proc.stderr
    assert "FAILED" in proc.stdout, "from_pytorch works without dynamo=False: remove the fix"


# --- fix 4: torch 2.13 exports shared initializers through ONNX Identity nodes ----------------

# a fresh BatchNorm's running_var equals its weight (ones), its running_mean its bias (zeros)
_BATCHNORM_NET = """
def batchnorm_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(), torch.nn.Linear(4, 2)
    )
    return net.eval()
"""


def test_from_pytorch_converts_identity_nodes():
    namespace = {"torch": torch}
    exec(_BATCHNORM_NET, namespace)
    model = namespace["batchnorm_net"]()
    converted = crypten.nn.from_pytorch(model, torch.zeros(1, 6))
    identities = [m for m in converted.modules() if type(m).__name__ == "Identity"]
    assert identities  # CrypTen's BatchNorm cannot run on plaintext: its values are
    x = torch.randn(3)  # checked encrypted by CrypTen's suite (test_tutorial_modules)
    assert all(m(x) is x for m in identities)


def test_from_pytorch_identity_fix_still_needed():
    proc = _python(
        _BATCHNORM_NET
        + _ONLY
        + f"""
only(*{_LOADS!r}, {_EXPORT!r})
try:
    crypten.nn.from_pytorch(batchnorm_net(), torch.zeros(1, 6))
except ValueError as err:
    print("FAILED", err)
else:
    print("CONVERTED")
"""
    )
    assert proc.returncode == 0, proc.stderr
    assert "FAILED" in proc.stdout and "Identity" in proc.stdout, proc.stdout


# --- TenSEAL ----------------------------------------------------------------------------------


def test_tenseal_ckks_round_trip():
    ts = pytest.importorskip("tenseal")
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    ctx.global_scale = 2**40
    a = [0.5, -1.25, 3.0, 1e-3]
    b = [1.5, 0.25, -2.0, 2e-3]
    enc_a = ts.ckks_vector(ctx, a)
    enc_b = ts.ckks_vector(ts.context_from(ctx.serialize()), b)  # a round trip through bytes
    total = enc_a + ts.ckks_vector_from(ctx, enc_b.serialize())
    assert total.serialize() != enc_a.serialize()
    torch.testing.assert_close(
        torch.tensor(total.decrypt(), dtype=torch.float64),
        torch.tensor(a, dtype=torch.float64) + torch.tensor(b, dtype=torch.float64),
        atol=1e-6,
        rtol=0,
    )


# --- debug validation skipped on every attribute access ---------------------------------------


def test_encrypted_tensors_skip_the_debug_validation_lookup():
    getter = crypten.CrypTensor.__dict__["__getattribute__"]
    assert getter.__code__.co_name != "validate_attribute"
    assert not crypten.cfg.debug.validation_mode  # what makes skipping it harmless


def test_debug_validation_lookup_is_still_there_without_the_fix():
    result = _python(
        """
        from smpc_synth.crypten_backend import compat
        compat._alias_onnx_registration()  # needed to import crypten at all
        import crypten
        getter = crypten.CrypTensor.__dict__["__getattribute__"]
        print(getter.__code__.co_name)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "validate_attribute"


# --- attribute dispatch remembered per name ----------------------------------------------------


def _crypten_getattribute():
    """CrypTen's own dispatch, without the debug-validation wrapper."""
    from smpc_synth.crypten_backend import compat

    validated = compat.original(crypten.CrypTensor, "__getattribute__")
    assert validated.__code__.co_name == "validate_attribute"
    return validated.__wrapped__


def test_remembered_attribute_dispatch_agrees_with_cryptens():
    ours = crypten.CrypTensor.__dict__["__getattribute__"]
    theirs = _crypten_getattribute()
    assert ours is not theirs
    x = crypten.mpc.MPCTensor.from_shares(torch.arange(4))
    for requires_grad in (False, True):
        x.requires_grad = requires_grad
        for name in ("share", "encoder", "_tensor", "ptype", "requires_grad", "size", "grad_fn"):
            for _ in range(2):  # the first read classifies the name, the second is remembered
                got, expected = ours(x, name), theirs(x, name)
                assert got == expected if callable(got) else got is expected, name
        for name in ("add", "mul", "neg", "relu", "sum", "__neg__", "copy_"):
            got, expected = ours(x, name), theirs(x, name)
            assert getattr(got, "__qualname__", None) == getattr(expected, "__qualname__", 1)
            if requires_grad and name in ("add", "relu"):  # autograd's wrapper, not the method
                assert "autograd_forward" in got.__qualname__
        if requires_grad:  # CrypTen refuses in-place functions under autograd
            with pytest.raises(RuntimeError, match="in-place"):
                ours(x, "add_")
        else:
            assert ours(x, "add_").__qualname__ == theirs(x, "add_").__qualname__
    assert crypten.cat([x, x]).size() == (8,)  # the metaclass's own dispatch is untouched


def test_cryptens_dispatch_still_works_out_every_read():
    names = set(_crypten_getattribute().__code__.co_names)
    assert {"PROTECTED_ATTRIBUTES", "PYTHON_BUILTIN", "get_grad_fn"} <= names


# --- config reads through plain sections -------------------------------------------------------


def test_config_reads_are_cached_and_follow_writes_and_reloads():
    cfg = crypten.cfg
    default = cfg.functions.exp_iterations
    assert type(cfg.functions).__name__ == "_Section"  # the fast path is in place
    try:
        cfg.functions.exp_iterations = default + 3  # write-through: omegaconf sees it too
        assert cfg.functions.exp_iterations == cfg.config.functions.exp_iterations == default + 3
        cfg.load_config(None)  # a reload replaces the config object: the cache follows
        assert cfg.functions.exp_iterations == default
        assert cfg["functions.exp_iterations"] == default
    finally:
        cfg.functions.exp_iterations = default


def test_temp_override_nests_and_restores():
    cfg = crypten.cfg
    default = cfg.functions.exp_iterations
    with cfg.temp_override({"functions.exp_iterations": 3, "functions.reciprocal_all_pos": True}):
        assert cfg.functions.exp_iterations == 3 and cfg.functions.reciprocal_all_pos
        with cfg.temp_override({"functions.exp_iterations": 5}):
            assert cfg.functions.exp_iterations == 5
        assert cfg.functions.exp_iterations == 3
    assert cfg.functions.exp_iterations == default
    assert not cfg.functions.reciprocal_all_pos
    # restored even when the block fails
    with pytest.raises(RuntimeError), cfg.temp_override({"functions.exp_iterations": 4}):
        raise RuntimeError
    assert cfg.functions.exp_iterations == default
    # CrypTen's own use (sigmoid's reciprocal overrides reciprocal_all_pos) is checked
    # against plaintext in test_two_party_crypten_matches_plaintext.


# What a program below does to the config: ("enter", {key: value}) opens a temp_override
# block, ("exit",) closes the innermost one, ("write", key, value) sets a key, ("read",
# key) and ("item", key) read one (as cfg.a.b and as cfg["a.b"]).
_KEYS = (
    "functions.exp_iterations",
    "functions.max_method",
    "functions.reciprocal_initial",
    "functions.not_in_cryptens_config",
    "extra_section.knob",
)
_VALUES = (12, "12", 0.5, True, "True", "pairwise", None, "null", "[1, 2]")
_WRITABLE = _KEYS[:4]  # a write to a missing section fails in CrypTen too


def _config_programs():
    from hypothesis import strategies as st

    key, value = st.sampled_from(_KEYS), st.sampled_from(_VALUES)
    op = st.one_of(
        st.tuples(st.just("enter"), st.dictionaries(key, value, min_size=1, max_size=3)),
        st.tuples(st.just("exit")),
        st.tuples(st.just("write"), st.sampled_from(_WRITABLE), value),
        st.tuples(st.sampled_from(["read", "item"]), key),
    )
    return st.lists(op, max_size=14)


def _run_config_program(cfg, program) -> list:
    """What each read gave (or the error's type), running ``program`` on ``cfg``."""
    seen = []
    with contextlib.ExitStack() as outer:
        blocks = []
        for step in program:
            if step[0] == "enter":
                block = contextlib.ExitStack()
                block.enter_context(cfg.temp_override(step[1]))
                blocks.append(outer.enter_context(block))
            elif step[0] == "exit" and blocks:
                blocks.pop().close()
            elif step[0] == "write":
                section, leaf = step[1].split(".")
                setattr(getattr(cfg, section), leaf, step[2])
            elif step[0] in ("read", "item"):
                section, leaf = step[1].split(".")
                try:
                    got = (
                        cfg[step[1]] if step[0] == "item" else getattr(getattr(cfg, section), leaf)
                    )
                except Exception as err:
                    got = type(err).__name__
                seen.append(repr(got))
        while blocks:
            blocks.pop().close()
    seen.append(repr(sorted(cfg.config.functions.items())))  # what is left after the blocks
    seen.append("extra_section" in cfg.config)
    return seen


def test_temp_override_behaves_as_cryptens():
    """Random programs of nested overrides, writes and reads give the same reads with
    CrypTen's temp_override (a merged copy of the whole config) as with ours (shadows in
    the cached sections): values parsed as omegaconf parses "key=value", keys CrypTen's
    config lacks added for the block, writes inside a block dropped at its end."""
    from hypothesis import given, settings

    from smpc_synth.crypten_backend import compat

    cfg = crypten.cfg

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(_config_programs())
    def check(program):
        try:
            with compat.shipped_crypten():
                cryptens = _run_config_program(cfg, program)
            cfg.load_config(None)
            ours = _run_config_program(cfg, program)
        finally:
            cfg.load_config(None)
        assert ours == cryptens

    check()


def test_config_sections_are_still_omegaconf_without_the_fix():
    result = _python(
        """
        from smpc_synth.crypten_backend import compat
        compat._alias_onnx_registration()  # needed to import crypten at all
        import crypten
        print(type(crypten.cfg.functions).__name__)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "DictConfig"


# --- empty MPCTensor shells skip the sharing ----------------------------------------------------


def test_empty_mpc_tensor_shells_skip_the_sharing():
    # no communicator is running here: a real sharing would fail, a shell must not
    for ptype in (crypten.mpc.ptype.arithmetic, crypten.mpc.ptype.binary):
        shell = crypten.mpc.MPCTensor([], ptype=ptype)
        # what from_shares of no shares gives: crypten.cryptensor([]) is a usable tensor
        reference = ptype.to_tensor().from_shares(torch.empty(0, dtype=torch.long))
        assert type(shell._tensor) is type(reference) and shell.ptype is ptype
        assert vars(shell._tensor).keys() == vars(reference).keys()
        assert torch.equal(shell.share, reference.share) and shell.share.dtype == torch.long
        assert vars(shell.encoder) == vars(reference.encoder)
        assert shell.size() == (0,)
    share = torch.arange(6).view(2, 3)
    rebuilt = crypten.mpc.MPCTensor.from_shares(share)
    assert torch.equal(rebuilt.share, share)
    assert torch.equal(rebuilt.clone().share, share)
    assert rebuilt.shallow_copy()._tensor is rebuilt._tensor


def test_empty_mpc_tensor_shells_still_share_without_the_fix():
    result = _python(
        """
        from smpc_synth.crypten_backend import compat
        compat._alias_onnx_registration()  # needed to import crypten at all
        import crypten
        try:
            crypten.mpc.MPCTensor([])
        except Exception as err:  # the sharing asks for a communicator that is not there
            print(type(err).__name__)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "RuntimeError"


# --- fixed-point decoding of negative values --------------------------------------------------


def test_decode_is_exact_for_every_value():
    from hypothesis import example, given, settings
    from hypothesis import strategies as st

    encoder = crypten.encoder.FixedPointEncoder()
    scale = encoder.scale

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(st.integers(-(2**40), 2**40))
    @example(-(2 * scale - 1))  # -1.99998: CrypTen's decode gives -2.99998
    @example(-5 * scale)
    @example(-1)
    def check(encoded):
        got = encoder.decode(torch.tensor([encoded]))
        # the float32 nearest to encoded / scale (exact in float64 below 2^53)
        expected = torch.tensor([encoded / scale], dtype=torch.float64).float()
        assert torch.equal(got, expected), (encoded, got, expected)

    check()


def test_decode_is_still_wrong_without_the_fix():
    result = _python(
        """
        from smpc_synth.crypten_backend import compat
        compat._alias_onnx_registration()  # needed to import crypten at all
        import crypten
        encoder = crypten.encoder.FixedPointEncoder()
        print(encoder.decode(torch.tensor([-(2 * encoder.scale - 1)])).item())
        """
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(-3 + 2**-16)  # not -2 + 2^-16


# --- stock baselines run CrypTen as shipped -----------------------------------------------------


def test_shipped_crypten_undoes_only_the_speed_fixes_and_restores_them():
    from smpc_synth.crypten_backend import compat

    getter = crypten.CrypTensor.__dict__["__getattribute__"]
    with compat.shipped_crypten():
        shipped = crypten.CrypTensor.__dict__["__getattribute__"]
        assert shipped.__code__.co_name == "validate_attribute"
        assert type(crypten.cfg.functions).__name__ == "DictConfig"
        with pytest.raises(RuntimeError, match="not initialized"):
            crypten.mpc.MPCTensor([])  # the full sharing again, which needs a communicator
        crypten.cfg.functions.exp_iterations += 1  # a write straight to omegaconf...
        assert "torchscript_exporter" in sys.modules[OLD_REGISTRATION].__name__  # still fixed
    try:
        assert crypten.CrypTensor.__dict__["__getattribute__"] is getter
        assert type(crypten.cfg.functions).__name__ == "_Section"
        assert crypten.mpc.MPCTensor([])._tensor.numel() == 0
        # ...is seen once our cached reads are back
        assert crypten.cfg.functions.exp_iterations == crypten.cfg.config.functions.exp_iterations
    finally:
        crypten.cfg.functions.exp_iterations -= 1


# --- crypten.load: CrypTen's own classes only, never any pickle -------------------------------


class _Marker:
    """Unpickling this creates a file: proof that a load ran code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_crypten_load_and_provider_caches_run_no_code(tmp_path):
    """compat used to make crypten.load (and the provider's cache loads) unpickle anything
    for the whole process."""
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"share": torch.ones(2), "payload": _Marker(marker)}, path)
    provider_module = sys.modules["crypten.mpc.provider.provider"]
    for load in (crypten.load, provider_module.torch.load):
        with pytest.raises(pickle.UnpicklingError):
            load(path)
    assert not marker.exists()
    torch.save(_Marker(marker), path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)  # and nothing process-wide was loosened
    assert not marker.exists()


def test_crypten_load_reads_a_saved_shared_tensor(tmp_path):
    """What crypten.save writes for an MPCTensor: its share, encoder and ptype objects."""
    from crypten.encoder import FixedPointEncoder
    from crypten.mpc.mpc import MPCTensor
    from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor
    from crypten.mpc.ptype import ptype

    share = object.__new__(ArithmeticSharedTensor)
    vars(share).update(_tensor=torch.arange(6).view(2, 3), encoder=FixedPointEncoder())
    tensor = object.__new__(MPCTensor)
    vars(tensor).update(_tensor=share, ptype=ptype.arithmetic, requires_grad=False)
    torch.save(tensor, tmp_path / "x.pt")
    loaded = crypten.load(tmp_path / "x.pt")
    assert type(loaded) is MPCTensor and loaded.ptype is ptype.arithmetic
    assert torch.equal(vars(loaded)["_tensor"].share, torch.arange(6).view(2, 3))
