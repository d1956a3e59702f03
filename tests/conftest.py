"""Fixtures shared by every system test: the repository, the release binary, scratch space, the
API on a free port with a database of either backend, and a throwaway PostgreSQL cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pytest

from support.postgres import INSTALL as POSTGRES_INSTALL
from support.postgres import PG_BIN_DIRS, PostgresCluster
from support.processes import ApiProcess, Database, api_backends
from support.net import free_port
from support.nginx import Nginx
from support.tools import require_tool

pytest_plugins = ["support.ci_policy", "support.report", "pytester"]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = ROOT / "artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    """A temporary directory that unprivileged helpers (nginx workers, postgres) can read;
    pytest's own tmp_path is private to the user running the tests."""
    path = Path(tempfile.mkdtemp(prefix="items-tests-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def release_binary() -> Path:
    """ITEMS_API_BIN, or items-api built now (cargo is incremental) in target/ or CARGO_TARGET_DIR."""
    given = os.environ.get("ITEMS_API_BIN")
    if given:
        path = Path(given)
        assert os.access(path, os.X_OK), f"ITEMS_API_BIN={given} is not an executable file"
        return path
    cargo = require_tool("cargo", "rustup, see rust-toolchain.toml")
    subprocess.run([cargo, "build", "--release", "--locked", "-p", "items-api"], cwd=ROOT, check=True)
    # Where cargo put it: CARGO_TARGET_DIR (relative to the checkout, as cargo reads it) or target/.
    return ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "release" / "items-api"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole run; tests take databases from it."""
    tools = [require_tool(name, POSTGRES_INSTALL, PG_BIN_DIRS) for name in ("initdb", "pg_ctl", "psql")]
    if os.geteuid() == 0:
        require_tool("runuser", "apt-get install util-linux")
    cluster = PostgresCluster(*tools)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module", params=api_backends())
def api_database(request: pytest.FixtureRequest, scratch: Path) -> Database:
    """A fresh, empty database for the API, of the backend this parameter names."""
    if request.param == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix="sqlite-", dir=scratch))
        return Database("sqlite", {"DB_PATH": str(directory / "app.db")})
    if request.param == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        # The API migrates its own schema here; the Compose stack and the Rust tests run the
        # separate `items-api migrate` and a serving role with DML rights only.
        return Database("postgres", {"DATABASE_URL": cluster.create_database(), "MIGRATE_ON_START": "true"})
    raise ValueError(f"unknown backend {request.param!r} in TEST_BACKENDS")


@pytest.fixture(scope="module")
def make_api(release_binary: Path, api_database: Database, artifacts: Path,
             request: pytest.FixtureRequest) -> Iterator[Callable[..., ApiProcess]]:
    """Makes API processes (not started) on free ports over this module's database; each is
    stopped at the end of the module and its log kept under artifacts/logs/."""
    made: list[ApiProcess] = []
    logs = artifacts / "logs"
    module = Path(request.node.name).stem

    def make(**settings: str) -> ApiProcess:
        log = logs / f"{module}-api-{len(made) + 1}.log"
        logs.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)
        api = ApiProcess(release_binary, free_port(), api_database, log, **settings)
        made.append(api)
        return api

    try:
        yield make
    finally:
        for api in made:
            api.stop()


@pytest.fixture(scope="module")
def api(make_api: Callable[..., ApiProcess]) -> ApiProcess:
    """The API, running, on a free loopback port with this module's database."""
    process = make_api()
    process.start()
    return process


@pytest.fixture(scope="session")
def html_root(scratch: Path, repo: Path) -> Path:
    """A copy of web/static that nginx's unprivileged workers can read."""
    root = scratch / "html"
    shutil.copytree(repo / "web" / "static", root)
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(Path(directory) / name, 0o644)
    return root


@pytest.fixture(scope="module")
def make_nginx(scratch: Path, html_root: Path, repo: Path, artifacts: Path,
               request: pytest.FixtureRequest) -> Iterator[Callable[..., Nginx]]:
    """Makes nginx instances (not started) rendering the template for an upstream, with the
    image's settings except the write limit, which is off unless a test passes WRITE_LIMIT="on";
    each is stopped at the end of the module, its logs and rendered config kept in
    artifacts/web/logs/."""
    made: list[Nginx] = []
    module = Path(request.node.name).stem

    def make(upstream: str, read_timeout: str | None = None, **settings: str) -> Nginx:
        name = f"{module}-nginx-{len(made) + 1}"
        nginx = Nginx(scratch / name, free_port(), upstream, html_root,
                      repo / "web" / "templates" / "default.conf.template", repo / "web" / "Dockerfile",
                      read_timeout=read_timeout, **settings)
        made.append(nginx)
        return nginx

    try:
        yield make
    finally:
        for index, nginx in enumerate(made, start=1):
            nginx.stop()
            nginx.save_logs(artifacts / "web" / "logs", f"{module}-nginx-{index}")
