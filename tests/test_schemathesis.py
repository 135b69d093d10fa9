"""Schemathesis (its CLI, against the running API's OpenAPI document), authenticated as a
district administrator: generated inputs for every operation never cause a server error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from api.auth import Principal, issue_token
from tests.api_util import ApiServer, make_user

ST = Path(sys.executable).parent / "schemathesis"


@pytest.fixture(scope="module")
def served(migrated):
    make_user(migrated, "st-admin", "admin", "iahdrai", "mat-khau-schemathesis")
    with ApiServer(migrated) as server:
        yield server


def test_schemathesis_finds_no_server_error(served, migrated, artifacts):
    token = issue_token(
        migrated.jwt_secret.get_secret_value(), Principal("st-admin", "admin", "iahdrai"), 30
    )
    r = subprocess.run(
        [
            str(ST),
            "run",
            served.url + "/api/v1/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "12",
            "--workers",
            "1",
            "--phases",
            "examples,fuzzing",
            "--seed",
            "6",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    (artifacts / "schemathesis.txt").write_text(r.stdout + r.stderr)
    assert r.returncode == 0, r.stdout[-4000:]
