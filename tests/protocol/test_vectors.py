"""Golden vectors: CPython and real MicroPython decode every vector the same way, as the file says."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_micropython

VECTORS = ROOT / "tests" / "vectors" / "protocol_v1.json"
RUNNER = ROOT / "tests" / "vectors" / "run_vectors.py"


def expected_items(vector):
    exp = vector["expect"]
    if "items" in exp:
        return exp["items"]
    if "message" in exp:
        return [{"message": exp["message"], "reencoded": True}]
    return [{"error": exp["error"]}]


def normalise(items):
    return [{k: v for k, v in item.items() if k != "reencoded"} if "message" in item else item for item in items]


def parse(stdout):
    return {r["name"]: r["items"] for r in map(json.loads, stdout.splitlines())}


@pytest.fixture(scope="module")
def cpython_run():
    out = subprocess.run([sys.executable, str(RUNNER), str(VECTORS)], capture_output=True, text=True, check=True, cwd=ROOT)
    return parse(out.stdout)


@pytest.fixture(scope="module")
def micropython_run():
    return parse(run_micropython(RUNNER, "/v.json", files=[(VECTORS, "/v.json")]))


DOC = json.loads(VECTORS.read_text())


def test_crc_check_value_on_both(cpython_run, micropython_run):
    assert cpython_run["crc-check"] == micropython_run["crc-check"] == [{"crc": "cbf43926"}]


@pytest.mark.parametrize("vector", DOC["vectors"], ids=lambda v: v["name"])
def test_vector_as_specified_on_cpython(vector, cpython_run):
    got = cpython_run[vector["name"]]
    if "error" in vector["expect"]:
        # The failed check comes first; what follows is the rest of the bytes
        # rescanned as log text, and never a message.
        assert got[0] == {"error": vector["expect"]["error"]}
        assert not any("message" in item for item in got)
    else:
        assert normalise(got) == normalise(expected_items(vector))
    assert all(item.get("reencoded", True) for item in got), "re-encoding a decoded message must give the same bytes"


def test_micropython_matches_cpython_for_every_vector(cpython_run, micropython_run):
    assert set(micropython_run) == set(cpython_run)
    for name in cpython_run:
        assert micropython_run[name] == cpython_run[name], name


def test_vectors_cover_every_message_type_and_every_error_code():
    from pingjia.protocol import messages as M

    types = {item["message"]["type"] for v in DOC["vectors"] for item in expected_items(v) if "message" in item}
    assert types == {name for name, _ in M.SCHEMA.values()}
    errors = {item["error"] for v in DOC["vectors"] for item in expected_items(v) if "error" in item}
    assert errors == {"crc", "mac", "truncated", "oversize", "version", "type", "malformed", "device"}


def test_vector_file_is_what_the_generator_writes(tmp_path):
    """The committed vectors are the generator's output: a format change can't slip in unnoticed."""
    before = VECTORS.read_text()
    subprocess.run([sys.executable, str(ROOT / "tests" / "vectors" / "make_vectors.py")], check=True, capture_output=True, cwd=ROOT)
    assert VECTORS.read_text() == before
