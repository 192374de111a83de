"""In-process checks of the HTTP layer's pieces that need no server: parsing, error mapping,
the engine host without a dataset, the environment export and the ``serve`` command line."""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

import numpy as np
import pytest
from tornado.web import HTTPError

from cavelab.server.errors import InputError, NotFoundError, StaleRootError
from cavelab.server.extension import CavelabConfig, export_environment
from cavelab.server.http import params
from cavelab.server.http.errors import error_response
from cavelab.server.http.host import NO_DATASET_MESSAGE, EngineHost, HostSettings
from cavelab.server.serve import build_command, new_token


def test_error_mapping_is_one_json_shape():
    assert error_response(StaleRootError("old", current_roots={"1": [2]})) == (
        409,
        {"message": "old", "code": "stale_root", "details": {"current_roots": {"1": [2]}}},
    )
    assert error_response(InputError("bad"))[0] == 400
    assert error_response(NotFoundError("gone"))[0] == 404
    status, body = error_response(RuntimeError("boom"))
    assert status == 500 and "boom" in body["message"]
    status, body = error_response(HTTPError(403))
    assert status == 403 and "Authorization" in body["message"]
    assert error_response(HTTPError(405, "nope %s", "x"))[1]["message"] == "nope x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0-10_0-20_0-30", [[0, 0, 0], [10, 20, 30]]), ("5-5_1-2_3-4", [[5, 1, 3], [5, 2, 4]]), (None, None)],
)
def test_parse_bounds(text, expected):
    b = params.parse_bounds(text)
    assert (b is None and expected is None) or b.tolist() == expected


@pytest.mark.parametrize("text", ["0-10_0-20", "a-b_0-1_0-1", "10-0_0-1_0-1", "0-1_0-1_0-1_0-1"])
def test_parse_bounds_rejects(text):
    with pytest.raises(InputError, match="bounds"):
        params.parse_bounds(text)


def test_parse_values():
    assert params.parse_bool("True", "x") is True and params.parse_bool("0", "x") is False
    assert params.parse_bool(None, "x", True) is True
    assert params.parse_timestamp("1717243200.0", "t") == 1717243200.0
    assert params.parse_timestamp("2024-06-01T12:00:00+00:00", "t") == 1717243200.0
    assert params.parse_id(" 42 ") == 42 and params.parse_id(7.0) == 7
    for bad in (True, -1, 2**64, "4x", 1.5, None):
        with pytest.raises(InputError):
            params.parse_id(bad)
    assert params.parse_id_list_text("[1, 2]", "ids") == [1, 2]
    assert params.parse_id_list_text("3,4", "ids") == [3, 4]
    assert params.parse_uint64_body(np.array([1, 2**63], dtype="<u8").tobytes()).tolist() == [1, 2**63]
    assert params.parse_uint64_body(b"").size == 0
    assert params.parse_json(b'{"a": 1}') == {"a": 1}


def test_host_without_a_dataset_answers_404():
    host = EngineHost(HostSettings(dataset_dir=""))
    with pytest.raises(NotFoundError, match="no cavelab dataset is configured"):
        asyncio.run(host.engine())
    assert host.peek()[0] == "unconfigured"
    assert "c.CavelabConfig.dataset_dir" in NO_DATASET_MESSAGE
    host.close()


def test_host_reports_an_unopenable_dataset(tmp_path):
    host = EngineHost(HostSettings(dataset_dir=str(tmp_path / "missing")))
    host.start()
    with pytest.raises(Exception, match="could not be opened"):
        asyncio.run(host.engine())
    assert host.peek()[0] == "error"
    host.close()


def test_config_defaults(monkeypatch):
    monkeypatch.setenv("CAVELAB_DATASET", "/data/x")
    cfg = CavelabConfig()
    assert cfg.dataset_dir == "/data/x" and cfg.max_merge_chunk_distance == 3
    assert cfg.executor_workers == 4
    cfg.max_merge_chunk_distance = -1
    assert cfg.host_settings().max_merge_chunk_distance is None


def test_export_environment(monkeypatch):
    for name in ("JUPYTERHUB_API_TOKEN", "CAVELAB_SERVER_URL", "CAVELAB_TOKEN"):
        monkeypatch.delenv(name, raising=False)  # restored afterwards
    app = SimpleNamespace(connection_url="http://127.0.0.1:9999/", identity_provider=SimpleNamespace(token="abc"))
    export_environment(app)
    assert os.environ["CAVELAB_SERVER_URL"] == "http://127.0.0.1:9999/cave"
    assert os.environ["CAVELAB_TOKEN"] == "abc"
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hubtok")
    app.connection_url = "http://127.0.0.1:9999/user/alice/"
    export_environment(app)
    assert os.environ["CAVELAB_SERVER_URL"] == "http://127.0.0.1:9999/user/alice/cave"
    assert os.environ["CAVELAB_TOKEN"] == "hubtok"


def test_serve_command(dataset_dir):
    tok = new_token()
    assert len(tok) == 32 and int(tok, 16) >= 0
    cmd = build_command(dataset_dir, port=9123, token=tok, lab=True)
    argv = " ".join(cmd.argv)
    assert "-m jupyterlab" in argv and "--port=9123" in argv and "--ip=127.0.0.1" in argv
    assert f"--IdentityProvider.token={tok}" in argv and "--no-browser" in argv
    assert f"--CavelabConfig.dataset_dir={dataset_dir.resolve()}" in argv
    assert f"--ServerApp.root_dir={dataset_dir.resolve().parent}" in argv
    assert ("--allow-root" in cmd.argv) == (os.geteuid() == 0)
    assert cmd.connection_line() == (
        f'CAVEclient("{cmd.name}", server_address="http://127.0.0.1:9123/cave", auth_token="{tok}")'
    )
    assert len(build_command(dataset_dir).token) == 32
    with pytest.raises(InputError, match="not a cavelab dataset"):
        build_command(dataset_dir.parent)
