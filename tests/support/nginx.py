"""Debian's nginx running web/templates/default.conf.template the way the web image does.

The image's entrypoint substitutes only the variables NGINX_ENVSUBST_FILTER matches and that are
defined (20-envsubst-on-templates.sh), and lists the API's servers with web/api-servers.sh
(40-items-api-servers.sh); the filter and the image's defaults are read from web/Dockerfile,
except that the write limit is off unless a test turns it on. The rendered file goes into an
nginx.conf shaped like the image's (http{} including conf.d). Nginx's own figures for Prometheus
(web/nginx-metrics.sh, which the image runs in a loop) are written when a test asks for them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from support import http
from support.dockerfile import final_stage_env
from support.net import free_port, wait_until
from support.processes import Service, base_environment
from support.tools import require_tool

IMAGE_ROOT = "/usr/share/nginx/html"
TEMPLATE_VARIABLES = ("API_UPSTREAM", "API_READ_TIMEOUT", "API_SERVERS_FILE", "NGINX_PORT", "WRITE_LIMIT",
                      "WRITE_LIMIT_RATE", "WRITE_LIMIT_BURST", "REAL_IP_FROM", "NGINX_METRICS_PORT",
                      "NGINX_METRICS_FILE")
# The image's settings that tests may override (make_nginx(..., WRITE_LIMIT="on")).
SETTINGS = ("WRITE_LIMIT", "WRITE_LIMIT_RATE", "WRITE_LIMIT_BURST", "REAL_IP_FROM")
API_SERVERS_SCRIPT = Path(__file__).resolve().parents[2] / "web" / "api-servers.sh"
NGINX_METRICS_SCRIPT = Path(__file__).resolve().parents[2] / "web" / "nginx-metrics.sh"


def list_api_servers(upstream: str, servers_file: Path) -> None:
    """What the image does before nginx starts: web/api-servers.sh once."""
    subprocess.run([str(API_SERVERS_SCRIPT), "once"], check=True, timeout=30,
                   env={**base_environment(), "API_UPSTREAM": upstream,
                        "API_SERVERS_FILE": str(servers_file)})


def render_template(template: Path, variables: dict[str, str], envsubst_filter: str) -> str:
    """envsubst limited to the defined variables whose names the filter matches."""
    envsubst = require_tool("envsubst", "apt-get install gettext-base")
    allowed = " ".join(f"${{{name}}}" for name in sorted(variables) if re.search(envsubst_filter, name))
    done = subprocess.run(
        [envsubst, allowed],
        input=template.read_text(),
        capture_output=True,
        text=True,
        env={**base_environment(), **variables},
        check=True,
    )
    return done.stdout


def with_static_root(config: str, html_root: Path) -> str:
    """The rendered config with the image's document root moved to `html_root`."""
    lines = config.splitlines(keepends=True)
    roots = [index for index, line in enumerate(lines) if line.strip() == f"root {IMAGE_ROOT};"]
    assert len(roots) == 1, f"expected one 'root {IMAGE_ROOT};' line in the template, found {len(roots)}"
    indent = lines[roots[0]][: len(lines[roots[0]]) - len(lines[roots[0]].lstrip())]
    lines[roots[0]] = f"{indent}root {html_root};\n"
    return "".join(lines)


class Nginx(Service):
    """One nginx prefix: nginx.conf, the rendered conf.d/default.conf, logs; foreground master."""

    def __init__(
        self,
        prefix: Path,
        port: int,
        upstream: str,
        html_root: Path,
        template: Path,
        dockerfile: Path,
        read_timeout: str | None = None,
        **settings: str,
    ) -> None:
        self.binary = require_tool("nginx", "apt-get install nginx")
        self.prefix = prefix
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        # Nginx's own figures for Prometheus: a port of their own, never the public one.
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"
        self.metrics_file = prefix / "nginx-metrics.prom"
        image_env = final_stage_env(dockerfile)
        self.envsubst_filter = image_env["NGINX_ENVSUBST_FILTER"]
        self.servers_file = prefix / "api-servers.conf"
        self.variables = {
            "API_UPSTREAM": upstream,
            "API_READ_TIMEOUT": read_timeout or image_env["API_READ_TIMEOUT"],
            "API_SERVERS_FILE": str(self.servers_file),
            "NGINX_PORT": str(port),
            "NGINX_METRICS_PORT": str(self.metrics_port),
            "NGINX_METRICS_FILE": str(self.metrics_file),
            **{name: image_env[name] for name in SETTINGS},
            # The tests send many writes from one address; tests/web/test_write_limit.py turns the
            # limit on.
            "WRITE_LIMIT": "off",
        }
        unknown = set(settings) - set(SETTINGS)
        assert not unknown, f"not a setting of the web image: {sorted(unknown)}"
        self.variables.update(settings)
        prefix.mkdir(parents=True, exist_ok=True)
        list_api_servers(upstream, self.servers_file)
        (prefix / "conf.d").mkdir(exist_ok=True)
        # Workers drop to an unprivileged user when nginx starts as root: they must read this.
        os.chmod(prefix, 0o755)
        self.rendered = render_template(template, self.variables, self.envsubst_filter)
        (prefix / "conf.d" / "default.conf").write_text(with_static_root(self.rendered, html_root))
        (prefix / "nginx.conf").write_text(self._main_config())
        self.access_log = prefix / "access.log"
        super().__init__(
            f"nginx :{port}",
            [self.binary, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log"),
             "-g", "daemon off;"],
            # The template logs to /dev/stdout, as in the image.
            stdout=self.access_log,
            stderr=prefix / "stderr.log",
            stop_signal=signal.SIGQUIT,
        )

    def _main_config(self) -> str:
        """web/nginx.conf, the image's main configuration, with its paths moved into the prefix."""
        p = self.prefix
        config = (Path(__file__).resolve().parents[2] / "web" / "nginx.conf").read_text()
        moved = {"/tmp/nginx.pid": f"{p}/nginx.pid", "/var/log/nginx/error.log": f"{p}/error.log",
                 "/etc/nginx/conf.d/": f"{p}/conf.d/", "/tmp/": f"{p}/"}
        # One pass, so a path already moved into the prefix is not moved again.
        config = re.sub("|".join(re.escape(path) for path in moved), lambda m: moved[m.group(0)], config)
        # One worker: the tests count connections and read one access log.
        return config.replace("worker_processes auto;", "worker_processes 1;")

    def config_test(self) -> subprocess.CompletedProcess:
        """`nginx -t` on this prefix."""
        return subprocess.run(
            [self.binary, "-q", "-p", f"{self.prefix}/", "-c", str(self.prefix / "nginx.conf"),
             "-e", str(self.prefix / "error.log"), "-t"],
            capture_output=True, text=True, timeout=30,
        )

    def start(self, timeout: float = 10.0) -> None:
        super().start()

        def answers() -> bool:
            if not self.running:
                raise RuntimeError(f"nginx exited:\n{self.log_tail()}\n{self.error_log()}")
            return http.request(self.url + "/healthz", timeout=2).status == 200

        wait_until(f"nginx on :{self.port} to answer /healthz", answers, timeout=timeout)

    def write_metrics(self) -> None:
        """What the image's loop does every few seconds: web/nginx-metrics.sh once."""
        require_tool("wget", "apt-get install wget")
        subprocess.run([str(NGINX_METRICS_SCRIPT), "once"], check=True, timeout=30,
                       env={**base_environment(), "NGINX_METRICS_PORT": str(self.metrics_port),
                            "NGINX_METRICS_FILE": str(self.metrics_file)})
        # Workers drop to an unprivileged user when nginx starts as root: they must read this.
        os.chmod(self.metrics_file, 0o644)

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_entries(self) -> list[Any]:
        """Every access-log line, parsed as JSON (a line that is not JSON raises ValueError)."""
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line.strip()]

    def access_entry(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The access-log entry of one request. nginx writes it just after the response's last
        byte, so it may lag the client by a moment."""

        def find() -> dict[str, Any] | None:
            matches = [entry for entry in self.access_entries() if entry.get("request_id") == request_id]
            return matches[-1] if matches else None

        return wait_until(f"the access-log line of request {request_id}", find, timeout=timeout, interval=0.05)

    def save_logs(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for source, suffix in (
            (self.access_log, "access.log"),
            (self.prefix / "error.log", "error.log"),
            (self.prefix / "conf.d" / "default.conf", "default.conf"),
        ):
            if source.exists():
                shutil.copyfile(source, directory / f"{name}-{suffix}")
