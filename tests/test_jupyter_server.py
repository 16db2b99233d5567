"""The notebooks in JupyterLab, as `make lab` starts it: a real server, its REST API and a kernel.

One JupyterLab server for the module, started like `make lab` (this environment's ``jupyter lab notebooks/``
from the repository root), bound to 127.0.0.1 on a free port, with a token, and with its config, data,
runtime and IPython folders in a temporary directory so that nothing of the user's is read or written.
Each notebook is opened the way JupyterLab opens it: its contents through ``/api/contents``, a session with
the kernel named in its metadata through ``/api/sessions``, then its first code cells are executed over the
kernel's websocket: every cell up to the tagged ``parameters`` cell, then the next cell's statements before
it calls ``study.ensure_results`` (which would train; nbval runs the whole notebooks). The kernel must
import ``helpers`` from this environment and accept the notebook's parameters. Sessions are deleted and the
server is shut down through the API; it must exit with status 0.

About 20-40 s on a 2-core CPU (one kernel start and one ``import torch`` per notebook).
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

websocket = pytest.importorskip("websocket", reason="websocket-client comes with jupyter_server")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
HOST = "127.0.0.1"
START_TIMEOUT = 120  # s: a busy 2-core machine needs a while for JupyterLab's extensions
CELL_TIMEOUT = 180  # s: the first `import helpers` imports torch

pytestmark = [pytest.mark.slow, pytest.mark.jupyter]


class CellError(AssertionError):
    """A cell sent to the kernel raised, or never finished."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _jupyter_command() -> list[str]:
    """This environment's `jupyter lab`, as `make lab` runs it (``.venv/bin/jupyter lab``)."""
    script = Path(sys.executable).with_name("jupyter")
    return [str(script), "lab"] if script.is_file() else [sys.executable, "-m", "jupyterlab"]


@dataclass
class Server:
    url: str
    token: str
    process: subprocess.Popen
    log: Path

    def api(self, method: str, path: str, body: dict | None = None, timeout: float = 60) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
                return response.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("jupyter")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    env.update(
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        IPYTHONDIR=str(home / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
    )
    token, port = secrets.token_hex(24), _free_port()
    log = home / "server.log"
    command = [
        *_jupyter_command(), "notebooks/",
        f"--ServerApp.ip={HOST}", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False", "--ServerApp.allow_root=True",
        "--ServerApp.terminals_enabled=False",
        # nothing leaves the machine: no update check, no news feed, no extension index
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None",
        "--LabApp.extension_manager=readonly",
    ]
    with open(log, "wb") as log_fh:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_fh, stderr=subprocess.STDOUT)
    srv = Server(f"http://{HOST}:{port}", token, process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"jupyter lab exited with {process.returncode} before it served:\n{srv.log_tail()}")
            try:
                status, body = srv.api("GET", "/api/status", timeout=5)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer on {srv.url} within {START_TIMEOUT} s:\n{srv.log_tail()}")
            time.sleep(0.5)
        yield srv
    finally:
        if process.poll() is None:
            try:
                srv.api("POST", "/api/shutdown", timeout=10)
            except OSError:
                pass
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, f"jupyter lab exited with {process.returncode} after shutdown:\n{srv.log_tail()}"


# ------------------------------------------------------------------------------------------ the kernel


class Kernel:
    """A kernel's websocket (``/api/kernels/<id>/channels``), speaking the Jupyter messaging protocol in JSON."""

    def __init__(self, server: Server, kernel_id: str):
        self.session = uuid.uuid4().hex
        ws_url = server.url.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels?session_id={self.session}"
        auth = [f"Authorization: token {server.token}"]
        self.ws = websocket.create_connection(ws_url, header=auth, timeout=CELL_TIMEOUT)

    def close(self) -> None:
        self.ws.close()

    def _send(self, msg_type: str, content: dict) -> str:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": msg_type, "session": self.session, "username": "test",
                       "version": "5.3", "date": datetime.now(timezone.utc).isoformat()},
            "parent_header": {}, "metadata": {}, "content": content, "channel": "shell", "buffers": [],
        }))
        return msg_id

    def _replies(self, msg_id: str, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                msg = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                break
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                yield msg
        raise CellError(f"no reply to {msg_id} within {timeout} s")

    def wait_ready(self, timeout: float = CELL_TIMEOUT) -> dict:
        msg_id = self._send("kernel_info_request", {})
        for msg in self._replies(msg_id, timeout):
            if msg["msg_type"] == "kernel_info_reply":
                return msg["content"]

    def execute(self, code: str, timeout: float = CELL_TIMEOUT) -> str:
        """Run ``code``; its stdout and results as text. Raises CellError when it raises."""
        msg_id = self._send("execute_request", {"code": code, "silent": False, "store_history": True,
                                                "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
        out, error, idle, reply = [], None, False, None
        for msg in self._replies(msg_id, timeout):
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                out.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                error = f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
            elif kind == "execute_reply":
                reply = content
            if idle and reply is not None:
                break
        if reply["status"] != "ok" or error:
            raise CellError(f"{error or reply.get('ename', reply['status'])} in:\n{code}")
        return "".join(out)


# ---------------------------------------------------------------------------------------- the notebooks


def _first_cells(notebook: dict) -> list[str]:
    """The code JupyterLab's user runs first: every code cell up to the tagged parameters cell, then the next
    code cell's statements before the first one that calls ``ensure_results`` (the imports, reading the
    parameters)."""
    cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    sources = ["".join(c["source"]) for c in cells]
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert tagged, "the notebook has no cell tagged 'parameters' (Papermill needs one)"
    first, following = sources[: tagged[0] + 1], sources[tagged[0] + 1 :]
    if following:
        source = following[0]
        statements = ast.parse(source).body
        upto = next((s for s in statements if "ensure_results" in ast.get_source_segment(source, s)), None)
        lines = source.splitlines()[: (upto.lineno - 1 if upto else len(source.splitlines()))]
        first.append("\n".join(lines))
    return first


PROBE = """
import json as _json, os as _os, sys as _sys
import helpers as _helpers
from helpers import config as _config, study as _study
_config.load_params(_study.resolve_out(_study.notebook_params(globals())))  # the notebook's parameters are valid
print(_json.dumps({"prefix": _sys.prefix, "helpers": _helpers.__file__, "root": str(_study.repo_root()),
                   "cwd": _os.getcwd()}))
"""


def _kernelspecs(server: Server) -> dict:
    status, specs = server.api("GET", "/api/kernelspecs")
    assert status == 200, specs
    return specs


def test_kernelspec_make_lab_uses_is_this_environment(server):
    specs = _kernelspecs(server)
    default = specs["kernelspecs"][specs["default"]]["spec"]
    assert default["language"] == "python"
    argv0 = Path(default["argv"][0])
    assert argv0.name.startswith("python"), default["argv"]
    if argv0.is_absolute():  # ipykernel's own spec names the server's interpreter
        assert argv0.resolve() == Path(sys.executable).resolve(), (default["argv"], sys.executable)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_opens_and_its_first_cells_run(server, path):
    local = json.loads(path.read_text())
    status, model = server.api("GET", f"/api/contents/{path.name}?content=1&type=notebook")
    assert status == 200, f"the server does not open {path.name}: {status} {model}"
    assert model["type"] == "notebook" and len(model["content"]["cells"]) == len(local["cells"])

    kernel_name = model["content"]["metadata"].get("kernelspec", {}).get("name") or _kernelspecs(server)["default"]
    assert kernel_name in _kernelspecs(server)["kernelspecs"], (
        f"{path.name} asks for kernel {kernel_name!r}, which the server does not have: JupyterLab would ask for one"
    )
    status, session = server.api("POST", "/api/sessions", {
        "path": path.name, "name": path.name, "type": "notebook", "kernel": {"name": kernel_name},
    })
    assert status == 201, f"no session for {path.name}: {status} {session}"
    kernel = None
    try:
        kernel = Kernel(server, session["kernel"]["id"])
        assert kernel.wait_ready()["language_info"]["name"] == "python"
        cells = _first_cells(local)
        assert any("helpers" in c and "import" in c for c in cells), "the first cells import nothing from helpers"
        for code in cells:
            kernel.execute(code)
        seen = json.loads(kernel.execute(PROBE).strip().splitlines()[-1])
    finally:
        if kernel is not None:
            kernel.close()
        status, body = server.api("DELETE", f"/api/sessions/{session['id']}")
        assert status == 204, body
    import helpers

    assert Path(seen["prefix"]).resolve() == Path(sys.prefix).resolve(), "the kernel runs another environment"
    assert Path(seen["helpers"]).resolve() == Path(helpers.__file__).resolve()
    assert Path(seen["root"]) == ROOT and Path(seen["cwd"]) == ROOT / "notebooks"
    status, kernels = server.api("GET", "/api/kernels")
    assert session["kernel"]["id"] not in [k["id"] for k in kernels], "the kernel outlived its session"


def test_a_failing_cell_fails(server):
    """The execution above can fail: an exception in the kernel is a failure, not a pass."""
    status, started = server.api("POST", "/api/kernels", {"name": _kernelspecs(server)["default"]})
    assert status == 201, started
    kernel = Kernel(server, started["id"])
    try:
        kernel.wait_ready()
        assert kernel.execute("print(6 * 7)").strip() == "42"
        with pytest.raises(CellError, match="ModuleNotFoundError"):
            kernel.execute("import helpers_that_does_not_exist")
    finally:
        kernel.close()
        assert server.api("DELETE", f"/api/kernels/{started['id']}")[0] == 204


def test_notebooks_found():
    assert len(NOTEBOOKS) >= 4  # the parametrisation above is not empty
