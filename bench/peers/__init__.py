"""The peers measured beside ours: the seed's stack (Flask on gunicorn) and FastAPI on uvicorn.

They do foo's and bar's work (and answer /healthz) on the bench's database, each in its fastest
ordinary configuration, pinned to the server core like ours. They run from bench/.peers-venv
(`make bench` creates it from bench/peers/requirements.txt), so the project's dependencies do not
grow; without it they are left out with a warning. These are comparisons, not targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent
VENV = PEERS_DIR.parent / ".peers-venv"
# The routes the peers serve (bar validates the contract's schema, as ours does).
PEER_ROUTES = frozenset({"healthz", "foo", "bar"})


@dataclass(frozen=True, slots=True)
class Peer:
    kind: str
    command: tuple[str, ...]  # {bin}, {dir} and {port} are filled in

    def argv(self, port: int) -> list[str]:
        return [part.format(port=port, bin=VENV / "bin", dir=PEERS_DIR) for part in self.command]

    @staticmethod
    def env(db_path: Path) -> dict[str, str]:
        """The apps read the database path from BENCH_DB."""
        return {"BENCH_DB": str(db_path)}


PEERS = (
    # The seed's stack: one sync worker, one request at a time per process (no keep-alive).
    Peer(
        "flask",
        (
            "{bin}/gunicorn",
            "--workers=1",
            "--worker-class=sync",
            "--bind=127.0.0.1:{port}",
            "--chdir={dir}",
            "--log-level=warning",
            "flask_app:app",
        ),
    ),
    # uvicorn[standard]: uvloop and httptools, one process.
    Peer(
        "fastapi",
        (
            "{bin}/uvicorn",
            "--app-dir={dir}",
            "--host=127.0.0.1",
            "--port={port}",
            "--loop=uvloop",
            "--http=httptools",
            "--no-access-log",
            "--log-level=warning",
            "fastapi_app:app",
        ),
    ),
)


def available_peers() -> tuple[list[Peer], str | None]:
    """The peers whose venv is there, and a warning when it is not."""
    if not (VENV / "bin" / "python").exists():
        return [], f"peers left out: no {VENV.name} (make bench creates it from bench/peers/requirements.txt)"
    return list(PEERS), None
