"""The demo command end to end, and every notebook in ``notebooks/`` executed against it.

``cavelab demo`` generates and ingests the ``small`` preset and starts JupyterLab with the
extension; the notebooks then run in a real kernel with the environment that server gives its
kernels (``CAVELAB_SERVER_URL``, ``CAVELAB_TOKEN``, ``CAVELAB_DATASET``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import requests
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "fedcba9876543210fedcba9876543210"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    scratch = tmp_path_factory.mktemp("demo_home")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAVELAB_", "JUPYTER"))}
    env.update(HOME=str(scratch), JUPYTER_RUNTIME_DIR=str(scratch / "runtime"))
    log = open(scratch / "demo.log", "wb")
    p = subprocess.Popen(
        [sys.executable, "-m", "cavelab.server.cli", "demo", str(work), "--port", str(port), "--token", TOKEN],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"token {TOKEN}"}
    deadline = time.monotonic() + 600
    try:
        while True:
            assert p.poll() is None, (scratch / "demo.log").read_text()[-4000:]
            try:
                r = requests.get(f"{url}/cave/api/status", headers=headers, timeout=5)
                if r.ok and r.json().get("ready"):
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "demo did not come up"
            time.sleep(0.5)
        yield {"url": url, "work": work, "headers": headers}
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
        log.close()


def test_demo_serves_lab_and_the_small_dataset(demo):
    r = requests.get(f"{demo['url']}/lab", headers=demo["headers"], timeout=30)
    assert r.status_code == 200 and "JupyterLab" in r.text
    status = requests.get(f"{demo['url']}/cave/api/status", headers=demo["headers"], timeout=30).json()
    assert status["ready"]
    assert (demo["work"] / "small" / "supervoxel_map.parquet").exists()
    assert sorted(p.name for p in (demo["work"] / "notebooks").glob("*.ipynb")) == sorted(
        p.name for p in (ROOT / "notebooks").glob("*.ipynb")
    )


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_notebook_runs(demo, name, monkeypatch):
    monkeypatch.setenv("CAVELAB_SERVER_URL", f"{demo['url']}/cave")
    monkeypatch.setenv("CAVELAB_TOKEN", TOKEN)
    monkeypatch.setenv("CAVELAB_DATASET", str(demo["work"] / "small"))
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(demo["work"])}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    if name == "starter.ipynb":
        assert "supervoxels from" in text and "operation_id" in text and "undo ->" in text
