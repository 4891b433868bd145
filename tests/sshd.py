"""A real OpenSSH server on 127.0.0.1, for the remote tests and the remote benchmark.

``start_sshd(folder)`` runs Debian's ``/usr/sbin/sshd`` in the foreground as a child process, on
a free loopback port, with a throwaway host key and a throwaway client key made by
``ssh-keygen`` in ``folder``. It writes a client config there (``Host edgeship-test``) that ssh
reads with ``-F``, so nothing in ``~/.ssh`` is read or written. The device it reaches is this
machine, logged in as the current user.

The ``loopback_sshd`` fixture starts one per session and skips, with the reason, only when
OpenSSH cannot be installed or the server does not start.

Example (as the benchmark uses it)::

    server = start_sshd(Path(tempfile.mkdtemp()))
    run_remote(server.host, ["bench", "m.tflite"], [Path("m.tflite")], ssh_options=server.ssh_options)
    server.stop()
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
HOST = "edgeship-test"
INSTALL = "apt-get install -y openssh-server openssh-client"


class SshdUnavailable(RuntimeError):
    """OpenSSH's server is not installed and cannot be, or it would not start."""


@dataclass
class LoopbackSshd:
    """A running sshd: ``host`` is its client config's name, ``ssh_options`` the ssh arguments that
    read that config."""

    process: subprocess.Popen
    port: int
    folder: Path
    user: str
    host: str = HOST

    @property
    def ssh_options(self) -> list[str]:
        return ["-F", str(self.folder / "ssh_config")]

    def ssh(self, command: str) -> subprocess.CompletedProcess:
        """Runs ``command`` on the server with the plain ssh client."""
        return subprocess.run(["ssh", *self.ssh_options, "-o", "BatchMode=yes", self.host, command],
                              capture_output=True, text=True, timeout=60, check=False)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def ensure_openssh() -> None:
    """Installs Debian's OpenSSH server and client when they are missing and this runs as root."""
    if Path(SSHD).exists() and shutil.which("ssh") and shutil.which("ssh-keygen"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SshdUnavailable(f"OpenSSH's server is not installed; as root run: {INSTALL}")
    for command in ([*INSTALL.split()], ["apt-get", "update"], [*INSTALL.split()]):
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if done.returncode == 0 and command[1] == "install":
            return
    raise SshdUnavailable(f"`{INSTALL}` failed: {done.stderr.strip()[-300:]}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeship-test", "-f", str(path)],
                   check=True, capture_output=True)


def _write_configs(folder: Path, port: int, user: str) -> Path:
    """The server's config and the client's; returns the server's."""
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    server = folder / "sshd_config"
    server.write_text("\n".join([
        f"ListenAddress 127.0.0.1:{port}",
        f"HostKey {folder / 'host_key'}",
        f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        f"AllowUsers {user}",
        "StrictModes no",  # the tmp folder's permissions are not sshd's business here
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "",
    ]))
    (folder / "ssh_config").write_text("\n".join([
        f"Host {HOST}",
        "  HostName 127.0.0.1",
        f"  Port {port}",
        f"  User {user}",
        "Host *",
        f"  IdentityFile {folder / 'client_key'}",
        "  IdentitiesOnly yes",
        "  IdentityAgent none",
        f"  UserKnownHostsFile {folder / 'known_hosts'}",
        "  GlobalKnownHostsFile /dev/null",
        "  StrictHostKeyChecking accept-new",
        "  LogLevel ERROR",  # no "Permanently added" notes in the tests' stderr
        "",
    ]))
    return server


def _wait_ready(process: subprocess.Popen, port: int, log: Path) -> None:
    """Waits for sshd's banner on the port; raises when sshd exits first."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SshdUnavailable(f"sshd exited ({process.returncode}): {log.read_text().strip()[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
                if connection.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise SshdUnavailable(f"sshd did not answer on port {port}: {log.read_text().strip()[-500:]}")


def start_sshd(folder: Path) -> LoopbackSshd:
    """Starts sshd on a free 127.0.0.1 port with keys and configs made in ``folder``."""
    ensure_openssh()
    folder.mkdir(parents=True, exist_ok=True)
    # sshd refuses to start without its privilege separation folder.
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    for name in ("host_key", "client_key"):
        if not (folder / name).exists():
            _keygen(folder / name)
    user = getpass.getuser()
    for _ in range(3):  # another process may take the free port before sshd binds it
        port = _free_port()
        config = _write_configs(folder, port, user)
        log = folder / "sshd.log"
        with log.open("wb") as output:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                       stdout=output, stderr=subprocess.STDOUT)
        try:
            _wait_ready(process, port, log)
            return LoopbackSshd(process, port, folder, user)
        except SshdUnavailable:
            if process.poll() is None:
                process.kill()
            process.wait()
            error = log.read_text()
            if "Address already in use" not in error:
                raise
    raise SshdUnavailable(f"sshd could not bind a free port: {error.strip()[-300:]}")


@pytest.fixture(scope="session")
def loopback_sshd(tmp_path_factory):
    """A running loopback sshd for the session; skips with the reason when it cannot start
    (fails in CI, where .ci/run installs it)."""
    from conftest import missing_system_program  # here: benchmarks/remote_bench.py imports this module too

    try:
        server = start_sshd(tmp_path_factory.mktemp("sshd"))
    except (SshdUnavailable, OSError, subprocess.CalledProcessError) as e:
        missing_system_program(f"no loopback sshd: {e}")
    yield server
    server.stop()
