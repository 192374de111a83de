"""``cavelab serve``: start a Jupyter server (or JupyterLab) hosting one dataset's CAVE API at ``/cave``.

>>> cmd = build_command("/data/ds", port=8899, token="0123456789abcdef0123456789abcdef")  # doctest: +SKIP
>>> serve("/data/ds", port=8899)                                                          # doctest: +SKIP
Connect with caveclient:
    CAVEclient("ds", server_address="http://127.0.0.1:8899/cave", auth_token="...")
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cavelab.server.engine.meta import DatasetMeta

WILDCARD_IPS = ("", "0.0.0.0", "::")


@dataclass
class ServeCommand:
    """The command line to run, and what a client needs to connect."""

    argv: list[str]
    name: str
    url: str
    token: str
    env: dict[str, str] = field(default_factory=dict)

    def connection_line(self) -> str:
        """The caveclient call that connects to this server."""
        return f'CAVEclient("{self.name}", server_address="{self.url}", auth_token="{self.token}")'


def new_token() -> str:
    """A random 32-hex token (caveclient/CloudVolume require hex or base64 tokens)."""
    return secrets.token_hex(16)


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def build_command(
    dataset_dir: str | Path,
    *,
    port: int = 8888,
    token: str | None = None,
    lab: bool = False,
    open_browser: bool = False,
    ip: str = "127.0.0.1",
    root_dir: str | Path | None = None,
    extra_args: Sequence[str] = (),
    extensions: Mapping[str, bool] | None = None,
) -> ServeCommand:
    """The ``jupyter server``/``jupyter lab`` command for ``dataset_dir`` (checks the dataset).

    ``extensions`` enables/disables other server extensions (e.g. ``{"jupyter_lsp": False}``);
    ``cavelab.server`` is always enabled (an editable install does not ship its config file).
    """
    ds = Path(dataset_dir).expanduser().resolve()
    meta = DatasetMeta.load(ds)  # InputError with a helpful message when it is not a dataset
    token = token or new_token()
    root = Path(root_dir).expanduser().resolve() if root_dir is not None else ds.parent
    module = "jupyterlab" if lab else "jupyter_server"
    jpserver_extensions = {**dict(extensions or {}), "cavelab.server": True}
    argv = [
        sys.executable,
        "-m",
        module,
        f"--port={int(port)}",
        f"--ip={ip}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        *(f"--ServerApp.jpserver_extensions={k}={bool(v)}" for k, v in jpserver_extensions.items()),
        f"--CavelabConfig.dataset_dir={ds}",
    ]
    if not open_browser:
        argv.append("--no-browser")
    if _running_as_root():
        argv.append("--allow-root")
    argv.extend(extra_args)
    host = "127.0.0.1" if ip in WILDCARD_IPS else ip
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    url = f"http://{host}:{int(port)}/cave"
    return ServeCommand(argv=argv, name=meta.name, url=url, token=token, env={"CAVELAB_DATASET": str(ds)})


def serve(
    dataset_dir: str | Path,
    *,
    port: int = 8888,
    token: str | None = None,
    lab: bool = False,
    open_browser: bool = False,
    ip: str = "127.0.0.1",
    extra_args: Sequence[str] = (),
    root_dir: str | Path | None = None,
) -> int:
    """Run a Jupyter server hosting ``dataset_dir`` until it exits; returns its exit code.

    Prints the caveclient connection line first. The root directory of the server is
    ``root_dir`` (e.g. a notebooks folder) or the dataset's parent. ``--allow-root`` is passed
    only when running as root. Ctrl-C is handled by the Jupyter server itself.
    """
    cmd = build_command(
        dataset_dir,
        port=port,
        token=token,
        lab=lab,
        open_browser=open_browser,
        ip=ip,
        root_dir=root_dir,
        extra_args=extra_args,
    )
    print(f"cavelab: serving dataset {cmd.name!r} at {cmd.url}")
    print("Connect with caveclient:")
    print(f"    {cmd.connection_line()}", flush=True)
    env = dict(os.environ)
    env.update(cmd.env)
    proc = subprocess.Popen(cmd.argv, env=env)
    previous = _forward_sigterm(proc)
    interrupts = 0
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                # the server got the same SIGINT (same process group) and shuts down by itself;
                # a repeated Ctrl-C stops it, a third kills it
                interrupts += 1
                if interrupts == 2:
                    proc.terminate()
                elif interrupts > 2:
                    proc.kill()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _forward_sigterm(proc: subprocess.Popen) -> object | None:
    """Pass SIGTERM on to the server (only possible from the main thread)."""
    try:
        return signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    except ValueError:
        return None
