"""A throwaway PostgreSQL 15 cluster in a data directory of its own, from Debian's package.

PostgreSQL refuses to run as root, so when we are root the server and initdb run
as the `postgres` system user and the data directory is handed to that user.

The cluster's settings (its port, listen address...) live in its own configuration,
`handoff.conf` in the data directory, included from `postgresql.conf`; not in `pg_ctl -o`
options. So any start keeps them: an operator's plain `pg_ctl -D <data> start` after a
crash or `pg_ctl -m immediate stop` comes up on the cluster's port, not on 5432 with the
defaults (issue 13).
"""

import os
import pwd
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from handoff_devenv.ports import accepts_connections, ensure_free, wait_until

PG_BIN = Path(os.environ.get("HANDOFF_PG_BIN", "/usr/lib/postgresql/15/bin"))
DATABASE = "handoff"
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "max_connections": "200",
    "shared_buffers": "256MB",
}
# Throwaway test clusters trade crash safety for speed; `handoff dev up` keeps the defaults.
NON_DURABLE_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
SETTINGS_FILE = "handoff.conf"
_INCLUDE = f"include_if_exists = '{SETTINGS_FILE}'  # written by handoff_devenv"


class PostgresCluster:
    def __init__(
        self,
        directory: Path,
        port: int,
        durable: bool = True,
        extra_settings: Mapping[str, str] | None = None,
    ) -> None:
        """`extra_settings`: server settings on top of the cluster's own (a benchmark's
        `shared_preload_libraries`, say), by name."""
        self.directory = directory
        self.port = port
        self.durable = durable
        self.extra_settings = dict(extra_settings or {})

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def start(self, timeout: float = 30.0) -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(
                f"no PostgreSQL 15 server in {PG_BIN}: apt-get install postgresql-15"
            )
        ensure_free(self.port, "PostgreSQL")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._hand_to_server_user(self.directory)
        if not (self.data_dir / "PG_VERSION").exists():
            self._as_server_user(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ]
            )
        self.write_settings()
        self._as_server_user(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ]
        )
        wait_until(lambda: accepts_connections(self.port), timeout, "PostgreSQL")
        self._create_database()

    def settings(self) -> dict[str, str]:
        """The server settings this cluster runs with, by name."""
        settings = {**SERVER_SETTINGS, "port": str(self.port)}
        if not self.durable:
            settings |= NON_DURABLE_SETTINGS
        return settings | self.extra_settings

    def write_settings(self) -> None:
        """Write `settings()` to the data directory's SETTINGS_FILE and include it from
        postgresql.conf (once), so that every start of the server, however made, keeps them."""
        lines = [f"{key} = '{value}'" for key, value in self.settings().items()]
        self._write_as_server_user(
            self.data_dir / SETTINGS_FILE,
            "# The cluster's own settings, from handoff_devenv.postgres. Rewritten on start.\n"
            + "\n".join(lines)
            + "\n",
        )
        main = self.data_dir / "postgresql.conf"
        text = main.read_text()
        if _INCLUDE not in text:
            self._write_as_server_user(main, f"{text.rstrip()}\n{_INCLUDE}\n")

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m <mode>` ("smart", "fast" or "immediate": a crash) if it runs."""
        if (self.data_dir / "postmaster.pid").exists():
            self._as_server_user(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]
            )

    def restart(self, mode: str = "immediate", timeout: float = 30.0) -> None:
        """`pg_ctl restart -m <mode>`, with the server's options as last started. With
        "immediate" every backend is killed at once, as in a crash, and the server recovers
        from the WAL as it starts, refusing connections (`CannotConnectNowError`) until it
        is done. Returns once it accepts connections; RuntimeError if it does not within
        `timeout` seconds."""
        self._as_server_user(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-m",
                mode,
                "-w",
                "-t",
                str(int(timeout)),
                "restart",
            ]
        )

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists() and accepts_connections(self.port)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _create_database(self) -> None:
        client = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
        exists = self._as_server_user(
            [str(PG_BIN / "psql"), *client, "-d", "postgres", "-tAc", query]
        )
        if exists.strip() != "1":
            self._as_server_user([str(PG_BIN / "createdb"), *client, DATABASE])

    def _as_server_user(self, command: list[str]) -> str:
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, check=False, capture_output=True, text=True)
        if result.returncode != 0:
            log_tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}{log_tail}"
            )
        return result.stdout

    @staticmethod
    def _write_as_server_user(path: Path, text: str) -> None:
        path.write_text(text)
        if os.geteuid() == 0:
            server_user = pwd.getpwnam("postgres")
            os.chown(path, server_user.pw_uid, server_user.pw_gid)

    @staticmethod
    def _hand_to_server_user(directory: Path) -> None:
        if os.geteuid() != 0:
            return
        server_user = pwd.getpwnam("postgres")
        for path in (directory, *directory.parents):
            if path.stat().st_mode & 0o001 == 0 and path != directory:
                raise RuntimeError(
                    f"{path} is not searchable by the postgres user: choose a data directory "
                    "outside private folders (e.g. under /tmp or the repository)"
                )
        os.chown(directory, server_user.pw_uid, server_user.pw_gid)
