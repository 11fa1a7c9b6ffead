"""A real OpenSSH server on loopback for a test: the SSH remote that a GPU host or a laptop uses.

    from sshd import SSHServer

    with SSHServer(tmp_path / "sshd") as server:
        server.url("/srv/store")     # ssh://root@127.0.0.1:<port>/srv/store
        server.client_key            # private key the server accepts (keyfile for dvc-ssh)
        server.known_hosts           # a known_hosts file that trusts this server's host key

or the `sshd` fixture (tests/conftest.py does not need to know about it: import it into the
test module, `from sshd import sshd  # noqa: F401`).

Everything (host key, client key, config, pid file, log) lives in the given folder; the
server listens on 127.0.0.1 only, on a free port, accepts only the generated key, and is
stopped (by its own pid) when the context ends. It needs Debian's openssh-server
(`apt-get install -y openssh-server`): without it the test FAILS, saying so, rather than
skipping, so that a CI without it cannot pass silently.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

SSHD = os.environ.get("ROADWORK_TEST_SSHD", "/usr/sbin/sshd")
INSTALL_HINT = ("openssh-server is not installed (no {sshd}): install it with "
                "`apt-get update && apt-get install -y openssh-server` (.ci/run does this)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)


class SSHServer:
    """`sshd -D` on 127.0.0.1:<free port> with generated keys; a context manager."""

    def __init__(self, folder: Path, start_timeout: float = 15.0):
        self.folder = Path(folder)
        self.start_timeout = start_timeout
        self.user = getpass.getuser()
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.host_key = self.folder / "ssh_host_ed25519_key"
        self.client_key = self.folder / "client_ed25519"
        self.authorized_keys = self.folder / "authorized_keys"
        self.known_hosts = self.folder / "known_hosts"
        self.config = self.folder / "sshd_config"
        self.log = self.folder / "sshd.log"

    # -- set-up -----------------------------------------------------------------------------
    def _prepare(self) -> None:
        if not (os.path.isfile(SSHD) and os.access(SSHD, os.X_OK)):
            pytest.fail(INSTALL_HINT.format(sshd=SSHD), pytrace=False)
        if shutil.which("ssh-keygen") is None:
            pytest.fail("ssh-keygen is missing: install openssh-client (apt-get install -y openssh-server "
                        "brings it)", pytrace=False)
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # privilege separation directory; Debian's init script creates it, we start sshd ourselves
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        _keygen(self.host_key, "roadwork-test-host")
        _keygen(self.client_key, "roadwork-test-client")
        self.authorized_keys.write_text(Path(f"{self.client_key}.pub").read_text())
        self.authorized_keys.chmod(0o600)
        self.config.write_text("\n".join([
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {self.folder / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"AllowUsers {self.user}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",          # the test's folders live under /tmp with loose modes
            "UseDNS no",
            "Subsystem sftp internal-sftp",  # dvc-ssh talks SFTP; no dependency on sftp-server's path
            "LogLevel VERBOSE",
            "",
        ]))
        check = subprocess.run([SSHD, "-t", "-f", str(self.config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd rejects the generated config:\n{check.stderr}")

    def _start_once(self) -> bool:
        self.port = _free_port()
        log = self.log.open("ab")
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config), "-p", str(self.port)],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # e.g. the port was taken between _free_port and bind: try another
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"SSH-2.0-"):
                        return True
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"sshd did not answer on {self.host}:{self.port} within {self.start_timeout}s:\n"
                           f"{self.log.read_text(errors='replace')[-3000:]}")

    def start(self) -> "SSHServer":
        self._prepare()
        for _ in range(3):
            if self._start_once():
                host_key = Path(f"{self.host_key}.pub").read_text().split()
                self.known_hosts.write_text(f"[{self.host}]:{self.port} {host_key[0]} {host_key[1]}\n")
                return self
        raise RuntimeError(f"sshd exited at start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "SSHServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- for the client side ------------------------------------------------------------------
    def url(self, path: str | Path) -> str:
        """The dvc remote url of `path` (absolute) on this server."""
        return f"ssh://{self.user}@{self.host}:{self.port}{Path(path).resolve()}"

    def ssh(self, *command: str, **kwargs) -> subprocess.CompletedProcess:
        """Run a command over the system ssh client (a check of the server, independent of DVC)."""
        return subprocess.run(["ssh", "-F", "none", "-i", str(self.client_key), "-p", str(self.port),
                               "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                               "-o", "StrictHostKeyChecking=yes", f"{self.user}@{self.host}", *command],
                              capture_output=True, text=True, timeout=30, **kwargs)

    def home(self) -> Path:
        """A HOME for client processes whose ~/.ssh/known_hosts trusts this server.

        dvc-ssh (asyncssh) checks the server's host key against ~/.ssh/known_hosts and refuses
        an unknown one ("Host key is not trusted"); a test must not touch the real ~/.ssh.
        """
        home = self.folder / "home"
        (home / ".ssh").mkdir(parents=True, exist_ok=True)
        (home / ".ssh").chmod(0o700)
        shutil.copy(self.known_hosts, home / ".ssh" / "known_hosts")
        return home


@pytest.fixture
def sshd(tmp_path_factory):
    """A running SSHServer for one test, stopped afterwards."""
    with SSHServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server
