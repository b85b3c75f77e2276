"""`btp` commands as Ray jobs: `ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- btp ...`
against a real Ray head on this machine, with token authentication on, as on a cluster."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import psutil
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_ENV = ROOT / "cluster" / "runtime_env.yaml"
BIN = Path(sys.executable).parent  # the environment's `ray` and `btp`
MARKER = "BTP_TEST_RAY_HEAD"  # set in the head's environment only: every process it starts inherits it


def _runtime_env() -> dict:
    return yaml.safe_load(RUNTIME_ENV.read_text())


# --- the runtime environment, offline ------------------------------------------------------------------------

HEAVY = [".git/config", ".venv/bin/python", "venv/bin/python", "runs/old/model.safetensors"]
HEAVY += ["data/synth/vqav2_train_0.arrow", "wandb/run-1/run.wandb", "studies/s/optuna.db"]
HEAVY += [
    "report/report.html",
    "quickstart/summary.json",
]  # btp report's and btp quickstart's default outputs
KEPT = ["bridgetower/__init__.py", "platform/btp/__init__.py", "platform/btp/data/__init__.py"]
KEPT += [
    "platform/btp/train/run.py",
    "experiments/synth/vqa.yaml",
    "cluster/runtime_env.yaml",
    "pyproject.toml",
]


def _packaged(tmp_path: Path, excludes: list[str]) -> set[str]:
    """Files that Ray's own packaging (what `--working-dir` uploads) puts in the package of a repository-like
    tree, given only these excludes (no .gitignore, no default excludes)."""
    from ray._private.runtime_env.packaging import create_package

    tree = tmp_path / "repo"
    for name in HEAVY + KEPT:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("x")
    package = tmp_path / "package.zip"
    create_package(str(tree), package, include_gitignore=False, excludes=excludes)
    with zipfile.ZipFile(package) as z:
        return {n for n in z.namelist() if not n.endswith("/")}


def test_runtime_env_excludes_heavy_folders_and_keeps_the_packages(tmp_path):
    files = _packaged(tmp_path, _runtime_env()["excludes"])
    assert set(KEPT) <= files
    assert not files & set(HEAVY)


def test_the_exclude_check_can_fail(tmp_path):
    assert set(HEAVY) <= _packaged(tmp_path / "none", [])  # nothing excluded: the heavy folders go up
    # unanchored `data/` would also drop the package btp.data
    assert "platform/btp/data/__init__.py" not in _packaged(tmp_path / "unanchored", ["data/"])


def test_runtime_env_puts_btp_on_the_path_without_a_platform_package():
    assert _runtime_env()["env_vars"]["PYTHONPATH"] == "platform"
    assert (ROOT / "platform" / "btp" / "__init__.py").is_file()
    assert not (ROOT / "platform" / "__init__.py").exists()


# --- a real head on this machine -----------------------------------------------------------------------------


def _die_with_this_process() -> None:
    """In the child before exec (Linux): SIGTERM when the test process dies, even by SIGKILL, so that an
    interrupted run leaves no Ray head behind; the head's own children share its fate the same way."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ours(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(MARKER) == marker:
                found.append(proc)
        except psutil.Error:  # gone, a zombie, or not ours to read
            pass
    return found


def _stop(head: subprocess.Popen, marker: str) -> list[psutil.Process]:
    """Stop the head by the processes it started (never `ray stop`, which ends every Ray on the machine):
    SIGTERM to `ray start --block`, which stops its children; then anything still carrying the marker (job
    drivers run in sessions of their own) is terminated, then killed. Returns what is left."""
    if head.poll() is None:
        head.terminate()
        try:
            head.wait(timeout=20)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait(timeout=10)
    deadline = time.monotonic() + 20
    while (left := _ours(marker)) and time.monotonic() < deadline:
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(left, timeout=3)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=3)
    return _ours(marker)


class Head:
    def __init__(self, temp: Path):
        self.temp = temp
        self.marker = uuid.uuid4().hex
        self.token = temp / "auth_token"
        self.token.write_text(secrets.token_hex(32))
        self.dashboard_port = _free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        outside = (
            "RAY_ADDRESS",
            "RAY_API_SERVER_ADDRESS",
            "RAY_AUTH_MODE",
            "RAY_AUTH_TOKEN",
            "RAY_AUTH_TOKEN_PATH",
        )
        clean = {k: v for k, v in os.environ.items() if k not in outside}
        clean["PATH"] = f"{BIN}{os.pathsep}{clean.get('PATH', '')}"
        # Token authentication as on a cluster: the mode explicit, the token in a file of this test only
        self.client_env = {**clean, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token)}
        # SIGTERM drains the node first, for up to 30 s by default: a test head has nothing to drain
        self.env = {**self.client_env, MARKER: self.marker, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "2"}
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        ports = {
            "--port": _free_port(),
            "--dashboard-port": self.dashboard_port,
            "--ray-client-server-port": _free_port(),
            "--dashboard-agent-listen-port": _free_port(),
            "--dashboard-agent-grpc-port": _free_port(),
            "--metrics-export-port": _free_port(),
            "--runtime-env-agent-port": _free_port(),
            "--node-manager-port": _free_port(),
            "--object-manager-port": _free_port(),
        }
        command = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", "--include-dashboard=true"]
        command += [f"{flag}={port}" for flag, port in ports.items()]
        command += ["--node-ip-address=127.0.0.1", "--object-store-memory=200000000"]
        command += [f"--temp-dir={self.temp / 'ray'}", "--disable-usage-stats"]
        self.log = self.temp / "head.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_this_process if sys.platform.startswith("linux") else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"ray start exited {self.process.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            if self.get("/api/version", token=True)[0] == 200:
                return
            time.sleep(0.5)
        raise TimeoutError(f"no Ray dashboard after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def get(self, path: str, token: bool) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {self.token.read_text()}"} if token else {}
        try:
            with urllib.request.urlopen(
                urllib.request.Request(self.address + path, headers=headers), timeout=5
            ) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, ""
        except OSError:
            return 0, ""

    def submit(self, *entrypoint: str, timeout: float) -> str:
        """`ray job submit` from the repository root, waiting for the end of the job (bounded)."""
        command = [str(BIN / "ray"), "job", "submit", "--address", self.address, "--working-dir", "."]
        command += ["--runtime-env", "cluster/runtime_env.yaml", "--", *entrypoint]
        done = subprocess.run(
            command, cwd=ROOT, env=self.client_env, capture_output=True, text=True, timeout=timeout
        )
        out = done.stdout + done.stderr
        assert done.returncode == 0 and "succeeded" in out, f"job failed ({done.returncode}):\n{out[-4000:]}"
        return out

    def uploads(self) -> list[Path]:
        found = (self.temp / "ray").glob("session_*/runtime_resources/working_dir_files/_ray_pkg_*")
        return sorted(p for p in found if p.is_dir())


@pytest.fixture(scope="module")
def head():
    # a short path of its own: Ray's socket paths must stay under the OS limit
    temp = Path(tempfile.mkdtemp(prefix="btpjob", dir="/tmp"))
    ray_head = Head(temp)
    try:
        ray_head.start()
        yield ray_head
    finally:
        left = _stop(ray_head.process, ray_head.marker) if ray_head.process else []
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"processes of the test's Ray head still running: {[p.pid for p in left]}"


def test_the_head_requires_the_token(head):
    assert head.get("/api/jobs/", token=False)[0] == 401
    assert head.get("/api/jobs/", token=True)[0] == 200


PROBE = (
    "import btp, bridgetower, platform, btp.data.pipeline; "
    "print('BTP', btp.__file__); print('BRIDGETOWER', bridgetower.__file__); print('PLATFORM', platform.__file__)"
)


@pytest.fixture(scope="module")
def train_job(head, tmp_path_factory):
    """One job (one upload, one round trip): where the job's Python finds the packages, then
    `btp train experiments/synth/vqa.yaml` on synthetic data, 4 steps."""
    from btp.data.synth import write_synthetic

    tmp = tmp_path_factory.mktemp("job")
    data, runs = tmp / "synth", tmp / "runs"
    write_synthetic(data, images=200, seed=0)  # what `btp data synth DIR --images 200` writes
    train = ["btp", "train", "experiments/synth/vqa.yaml", f"data.root={data}", f"train.storage={runs}"]
    train += ["train.name=job", "train.max_steps=4", "train.num_workers=1", "train.batch_size=8"]
    train += ["train.log_every=2", "train.eval_every=null", "data.val=[]", "track.wandb=false"]
    script = f"python -c {shlex.quote(PROBE)} && {shlex.join(train)}"
    return head.submit("bash", "-c", script, timeout=300), runs / "job"


def test_jobs_import_the_uploaded_project_and_the_standard_platform(head, train_job):
    out, _ = train_job
    found = dict(
        line.split(" ", 1)
        for line in out.splitlines()
        if line.split(" ")[0] in ("BTP", "BRIDGETOWER", "PLATFORM")
    )
    upload = Path(found["BTP"]).parents[2]
    assert upload in head.uploads()
    assert Path(found["BTP"]) == upload / "platform" / "btp" / "__init__.py"
    assert Path(found["BRIDGETOWER"]) == upload / "bridgetower" / "__init__.py"
    assert Path(found["PLATFORM"]).parent == Path(os.__file__).parent  # the standard library's
    # what went up: the project, not the heavy folders
    top = {p.name for p in upload.iterdir()}
    assert {"bridgetower", "platform", "experiments", "cluster", "pyproject.toml"} <= top
    assert not top & {".git", ".venv", "venv", "runs", "data", "wandb", "studies", "reports"}
    size = sum(f.stat().st_size for f in upload.rglob("*") if f.is_file())
    assert size < 10_000_000


def test_btp_train_runs_unchanged_as_a_job(train_job):
    out, run = train_job
    assert "btp train job: done" in out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [2, 4]
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    assert (run / "config.yaml").is_file() and (run / "model" / "config.json").is_file()
    from safetensors.torch import load_file

    assert load_file(str(run / "model" / "model.safetensors"))
