"""One real ``jupyter server`` with the cavelab extension for the whole API test session.

The dataset is built the real way (``cavelab.server.synth.generate`` -> ``ingest``) when those
work, else with ``tests/graph_factory.random_graph``. The server runs in a subprocess on a free
port with a scratch HOME and JUPYTER_RUNTIME_DIR, is configured on its command line with
``--CavelabConfig.dataset_dir=...``, and is stopped with SIGTERM at the end.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cave_truth import Editor, GraphTruth, Ledger

from cavelab.server.serve import build_command

TOKEN = "0123456789abcdef0123456789abcdef"
# other people on the same server (LabIdentityProvider): token -> name and groups
USERS = {
    "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0": {"name": "bob", "groups": []},
    "a11ce0a11ce0a11ce0a11ce0a11ce0a1": {"name": "alice", "groups": ["lab"]},
    "ca401ca401ca401ca401ca401ca401ca": {"name": "carol", "groups": ["lab"]},
}
ROW_LIMIT = 500
# the API test servers: named users by token, and a small row limit
LAB_CONFIG = {
    "ServerApp": {"identity_provider_class": "cavelab.server.identity.LabIdentityProvider"},
    "LabIdentityProvider": {"users": USERS},
    "CavelabConfig": {"row_limit": ROW_LIMIT},
}
SEED = 7
OTHER_EXTENSIONS = {
    "jupyterlab": False,
    "jupyter_lsp": False,
    "jupyter_server_terminals": False,
    "notebook_shim": False,
}


@dataclass
class Server:
    """A running test server."""

    url: str  # http://127.0.0.1:PORT
    token: str
    dataset_dir: Path
    log_path: Path
    proc: subprocess.Popen
    ready_at: dt.datetime = dt.datetime.min

    @property
    def cave(self) -> str:
        return f"{self.url}/cave"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _build_dataset(root: Path) -> Path:
    """generate -> ingest (the real path); falls back to the random graph factory."""
    dst = root / "dataset"
    try:
        from cavelab.server.ingest.pipeline import ingest
        from cavelab.server.synth import generate

        generate(root / "source", preset="tiny", seed=SEED, progress=False)
        ingest(root / "source", dst, progress=False, workers=1)
        return dst
    except Exception as e:  # the real path is still being built by others
        warnings.warn(f"generate/ingest failed ({type(e).__name__}: {e}); using random_graph", stacklevel=1)
        import shutil

        from graph_factory import random_graph

        shutil.rmtree(dst, ignore_errors=True)
        random_graph(dst, seed=SEED, p_active=0.45)
        return dst


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_dataset(tmp_path_factory.mktemp("cave_api"))


@contextlib.contextmanager
def launch(dataset_dir: Path, scratch: Path, config: dict[str, Any] | None = None) -> Iterator[Server]:
    """Run a jupyter server with cavelab on ``dataset_dir`` (config file in a scratch dir)."""
    for sub in ("home", "runtime", "config", "data"):
        (scratch / sub).mkdir(parents=True, exist_ok=True)
    (scratch / "config" / "jupyter_server_config.json").write_text(json.dumps(config or {}))
    port = _free_port()
    cmd = build_command(
        dataset_dir, port=port, token=TOKEN, root_dir=scratch, extensions=OTHER_EXTENSIONS
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAVELAB_", "JUPYTER"))}
    env.update(
        HOME=str(scratch / "home"),
        JUPYTER_RUNTIME_DIR=str(scratch / "runtime"),
        JUPYTER_CONFIG_DIR=str(scratch / "config"),
        JUPYTER_DATA_DIR=str(scratch / "data"),
    )
    log_path = scratch / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd.argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    srv = Server(f"http://127.0.0.1:{port}", TOKEN, dataset_dir, log_path, proc)
    try:
        _wait_ready(srv)
        yield srv
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def server(dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with launch(dataset_dir, tmp_path_factory.mktemp("jupyter"), LAB_CONFIG) as srv:
        yield srv


def _wait_ready(srv: Server, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {srv.token}"}
    last = ""
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise RuntimeError(f"jupyter server exited ({srv.proc.returncode}):\n{srv.log()}")
        try:
            r = requests.get(f"{srv.cave}/api/status", headers=headers, timeout=5)
            last = r.text
            if r.ok and r.json().get("ready"):
                time.sleep(0.005)
                srv.ready_at = dt.datetime.now(dt.timezone.utc)
                time.sleep(0.005)
                return
            if r.ok and r.json().get("state") == "error":
                raise RuntimeError(f"the dataset failed to open: {r.text}\n{srv.log()}")
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout}s (last status {last!r}):\n{srv.log()}")


@pytest.fixture(scope="session")
def truth(dataset_dir: Path) -> GraphTruth:
    return GraphTruth.load(dataset_dir)


@pytest.fixture(scope="session")
def ledger(truth: GraphTruth) -> Ledger:
    """The model of the current graph, shared by every test that edits."""
    return Ledger(truth)


@pytest.fixture(scope="session")
def client(server: Server, truth: GraphTruth) -> Any:
    from caveclient import CAVEclient

    return CAVEclient(
        truth.name, server_address=server.cave, auth_token=server.token, write_server_cache=False
    )


def client_for(server: Server, name: str, token: str | None = None) -> Any:
    """A fresh caveclient (no cached versions) as ``token``'s user (default: the owner)."""
    from caveclient import CAVEclient

    return CAVEclient(
        name, server_address=server.cave, auth_token=token or server.token, write_server_cache=False
    )


def token_of(user: str) -> str:
    return next(t for t, u in USERS.items() if u["name"] == user)


@pytest.fixture(scope="session")
def cg(client: Any) -> Any:
    return client.chunkedgraph


class Api:
    """Raw HTTP against the server (for what caveclient does not expose)."""

    def __init__(self, server: Server, table: str) -> None:
        self.server = server
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"Bearer {server.token}"
        self.P = f"{server.cave}/segmentation/api/v1/table/{table}"

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.s.get(self._url(path), allow_redirects=False, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.s.post(self._url(path), allow_redirects=False, **kw)

    def _url(self, path: str) -> str:
        if path.startswith("http"):
            return path
        if path.startswith("/"):
            return self.server.cave + path
        return f"{self.P}/{path}"

    def status(self) -> dict:
        r = self.get("/api/status")
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="session")
def api(server: Server, truth: GraphTruth) -> Api:
    return Api(server, truth.name)


@pytest.fixture(scope="session")
def t0(server: Server) -> dt.datetime:
    """A time after the server became ready and before any test edit."""
    return server.ready_at


@pytest.fixture(scope="session")
def editor(cg: Any, api: Api, truth: GraphTruth, ledger: Ledger) -> Editor:
    return Editor(cg, api, truth, ledger)


def own_server_fixtures(prefix: str) -> tuple[Any, ...]:
    """Module-scoped ``dataset_dir, server, truth, ledger, client, api, editor`` fixtures.

    A test module that edits the graph assigns these at module level to get its own server and
    dataset, so its edits cannot disturb the graph stories of the other modules::

        dataset_dir, server, truth, ledger, client, api, editor = own_server_fixtures("mine")
    """

    @pytest.fixture(scope="module", name="dataset_dir")
    def _dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return _build_dataset(tmp_path_factory.mktemp(prefix))

    @pytest.fixture(scope="module", name="server")
    def _server(dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
        with launch(dataset_dir, tmp_path_factory.mktemp(f"jupyter_{prefix}"), LAB_CONFIG) as srv:
            yield srv

    @pytest.fixture(scope="module", name="truth")
    def _truth(dataset_dir: Path) -> GraphTruth:
        return GraphTruth.load(dataset_dir)

    @pytest.fixture(scope="module", name="ledger")
    def _ledger(truth: GraphTruth) -> Ledger:
        return Ledger(truth)

    @pytest.fixture(scope="module", name="client")
    def _client(server: Server, truth: GraphTruth) -> Any:
        return client_for(server, truth.name)

    @pytest.fixture(scope="module", name="api")
    def _api(server: Server, truth: GraphTruth) -> Api:
        return Api(server, truth.name)

    @pytest.fixture(scope="module", name="editor")
    def _editor(client: Any, api: Api, truth: GraphTruth, ledger: Ledger) -> Editor:
        return Editor(client.chunkedgraph, api, truth, ledger)

    return _dataset_dir, _server, _truth, _ledger, _client, _api, _editor
