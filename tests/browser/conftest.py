"""Fixtures for the browser tests: a real Jupyter server and Debian's Chromium via Playwright.

Nothing here downloads a browser: Chromium is the system one (``/usr/bin/chromium``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ARTIFACTS = REPO / "tests" / "artifacts"
QUICKSTART = REPO / "demo_notebooks" / "quickstart.ipynb"
STANDIN = HERE / "standin.ipynb"
TOKEN = "tm-browser-test-token"
STARTUP_TIMEOUT_S = 90


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            reason = "the playwright Python package is not installed"
    if reason is None:
        return
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class JupyterServer:
    app: str  # "lab" or "notebook"
    url: str  # base URL, ending with "/"
    token: str
    root: Path
    process: subprocess.Popen
    log_path: Path
    kernel_pids: set[int] = field(default_factory=set)

    def page_url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.url}{path}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET") -> object:
        request = urllib.request.Request(
            f"{self.url}api/{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method == "POST" else None,
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _notebook_for_tests() -> Path:
    return QUICKSTART if QUICKSTART.exists() else STANDIN


def _start_server(app: str, tmp: Path) -> JupyterServer:
    if app == "notebook" and shutil.which("jupyter-notebook", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("Notebook 7 is not installed (pip install notebook)")
    root = tmp / "root"
    root.mkdir()
    shutil.copy(_notebook_for_tests(), root / "quickstart.ipynb")
    shutil.copy(STANDIN, root / "standin.ipynb")
    settings = tmp / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    if app == "lab":
        # Keep the page quiet: no news toast, no update check. (Notebook 7 has no schema for
        # these settings and raises on them.)
        (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port = _free_port()
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONUNBUFFERED="1",
    )
    built = REPO / "torchmagic" / "labextension"
    if (built / "package.json").exists():
        # The extension as last built here (`jlpm run build`), ahead of the copy an earlier
        # `pip install` left in the environment: Jupyter takes the first one of a name on its path.
        link = tmp / "data" / "labextensions" / "torchmagic-lab"
        link.parent.mkdir(parents=True)
        link.symlink_to(built, target_is_directory=True)
        env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(tmp / "data"), env.get("JUPYTER_PATH")]))
    log_path = tmp / f"jupyter-{app}.log"
    command = [
        sys.executable, "-m", "jupyter", app,
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root}",
        f"--LabServerApp.user_settings_dir={tmp / 'user-settings'}",
        f"--LabServerApp.workspaces_dir={tmp / 'workspaces'}",
        "--LabApp.expose_app_in_browser=True",  # replaced for Notebook 7 below
    ]  # fmt: skip
    if app == "notebook":
        command[-1] = "--JupyterNotebookApp.expose_app_in_browser=True"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = JupyterServer(app, f"http://127.0.0.1:{port}/", TOKEN, root, process, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter {app} exited at startup:\n{server.log()}")
        try:
            server.api("status")
            return server
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                _stop_server(server)
                raise RuntimeError(f"jupyter {app} did not start:\n{server.log()}") from None
            time.sleep(0.5)


def _stop_server(server: JupyterServer) -> None:
    """Stop the server, its kernels (which run in sessions of their own) and nothing else."""
    import psutil

    try:
        children = psutil.Process(server.process.pid).children(recursive=True)
    except psutil.Error:
        children = []
    try:
        server.api("shutdown", method="POST")  # shuts the kernels down cleanly too
        server.process.wait(timeout=20)
    except Exception:
        pass
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    server = _start_server("lab", tmp_path_factory.mktemp("lab"))
    yield server
    _stop_server(server)


@pytest.fixture(scope="module")
def notebook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    server = _start_server("notebook", tmp_path_factory.mktemp("notebook"))
    yield server
    _stop_server(server)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
