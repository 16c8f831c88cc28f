"""The runner of CrypTen's own test suite (``scripts/crypten_suite.py``): its fetch, and
the check of its results against the differences ``docs/crypten-compat.md`` explains."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
import crypten_suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    return crypten_suite.fetch("wheel", tmp_path_factory.mktemp("cache"))


def test_fetch_copies_cryptens_tests_outside_the_repository(suite):
    assert not suite.is_relative_to(crypten_suite.ROOT)
    assert (suite / "SOURCE").read_text().split() == ["wheel", crypten_suite.COMMIT]
    for name in crypten_suite.FILES:
        assert (suite / "test" / name).is_file(), name
    assert (suite / "test" / "multiprocess_test_case.py").is_file()
    assert crypten_suite.fetch("wheel", suite.parent) == suite  # cached: not fetched again


def test_every_documented_difference_names_a_test_that_exists(suite):
    listed = crypten_suite.documented()
    assert len(listed) >= 3
    for key, configs in listed.items():
        file, cls, test = key.split("::")
        assert file in crypten_suite.FILES, key
        assert configs and configs <= set(crypten_suite.CONFIGS), key
        source = (suite / "test" / file).read_text()
        assert re.search(rf"^\s+def {test}\(self", source, re.MULTILINE), key
        assert re.search(rf"^class {cls}\(", source, re.MULTILINE), key


def test_only_unexplained_differences_from_stock_fail_the_run():
    listed = {"test_a.py::T::test_intended": {"grpc"}}
    results = {
        "stock": {
            "test_a.py": {
                "T::test_intended": "passed",
                "T::test_broken": "passed",
                "T::test_flaky_on_stock": "failed",
                "T::test_fine": "passed",
            }
        },
        "gloo": {
            "test_a.py": {
                "T::test_intended": "failed",
                "T::test_broken": "passed",
                "T::test_fine": "skipped",
            }
        },
        "grpc": {
            "test_a.py": {
                "T::test_intended": "failed",
                "T::test_broken": "failed",
                "T::test_flaky_on_stock": "failed",
            }
        },
    }
    known, unknown = crypten_suite.compare(results, listed)
    assert known == [("grpc", "test_a.py::T::test_intended")]
    # intended only over grpc; a test that breaks, is skipped or is missing never is
    assert unknown == [
        ("gloo", "test_a.py::T::test_intended"),
        ("gloo", "test_a.py::T::test_fine"),
        ("grpc", "test_a.py::T::test_broken"),
        ("grpc", "test_a.py::T::test_fine"),
    ]
    table = crypten_suite.table(results, ["test_a.py"])
    assert "| test_a.py | 3/1/0 | 1/1/1 | 0/3/0 |" in table
    # a file a configuration did not run is no difference
    assert crypten_suite.compare({"stock": results["stock"], "grpc": {}}, listed) == ([], [])
