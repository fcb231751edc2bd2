"""deploy/: the systemd unit passes `systemd-analyze verify`, the nginx site passes `nginx -t`.

Each check runs when its tool is installed (.ci/run installs nginx) and skips saying so otherwise.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server.config import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
UNIT = DEPLOY / "aiohttp-api-server.service"
SITE = DEPLOY / "nginx-aiohttp-api-server.conf"
INSTALL_DIR = "/srv/aiohttp-api-server"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
OPENSSL = shutil.which("openssl")


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_runs_circusd_as_its_own_user_hardened_and_writing_only_var():
    unit = directives(UNIT.read_text())
    assert unit["ExecStart"] == [f"{INSTALL_DIR}/.venv/bin/python -m server supervise"]
    assert unit["User"] == ["apiserver"] and unit["Group"] == ["apiserver"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["ReadWritePaths"] == [f"{INSTALL_DIR}/var"]
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices", "RestrictSUIDSGID"):
        assert unit[key] == ["yes"], key
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["KillMode"] == ["mixed"]  # circusd stops the watchers in order; systemd does not
    # The metrics files on tmpfs, in the runtime folder systemd makes writable for the service.
    assert unit["RuntimeDirectory"] == ["aiohttp-api-server"]
    assert "METRICS_DIR=/run/aiohttp-api-server/metrics" in unit["Environment"]
    # The reload uses the control socket config.yaml names, under var/.
    assert "ipc:///srv/aiohttp-api-server/var/circus/control.sock" in unit["ExecReload"][0]


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (Debian: systemd)")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    # Verify checks that the commands exist: point the unit at this checkout, as installed.
    text = UNIT.read_text().replace(INSTALL_DIR, str(PROJECT_ROOT))
    text = text.replace(f"{PROJECT_ROOT}/.venv/bin/python", sys.executable)
    text = text.replace(f"{PROJECT_ROOT}/.venv/bin/circusctl", str(Path(sys.executable).parent / "circusctl"))
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # It exits 0 even for unknown keys and bad values, which it only prints: none may be printed.
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and complaints == [], result.stdout + result.stderr


def test_the_nginx_site_proxies_to_the_web_socket_with_tls_and_readyz():
    site = SITE.read_text()
    port = 8080  # server.port of config.yaml: the socket circus shares between the web processes
    assert re.search(rf"server 127\.0\.0\.1:{port}\b", site)
    assert "listen 443 ssl" in site and "return 301 https://$host$request_uri;" in site
    assert "location = /readyz" in site
    assert re.search(r"location /internal/ \{\s*allow 127\.0\.0\.1;\s*allow ::1;\s*deny all;", site)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian: nginx-light; .ci/run installs it)")
@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed (needed for a throwaway certificate)")
def test_nginx_t_accepts_the_site(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=api.example.com",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    site = tmp_path / "site.conf"
    site.write_text(
        SITE.read_text()
        .replace("/etc/letsencrypt/live/api.example.com/fullchain.pem", str(cert))
        .replace("/etc/letsencrypt/live/api.example.com/privkey.pem", str(key))
    )
    # The site is an http{}-level include, as in /etc/nginx/sites-enabled/.
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n    access_log off;\n    include {site};\n}}\n"
    )
    result = subprocess.run(
        [NGINX, "-t", "-p", f"{tmp_path}/", "-c", str(conf)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
