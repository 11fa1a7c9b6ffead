"""A real SSH server on loopback for a test: the SSH remote that a GPU host or a laptop uses.

    from sshd import SSHServer

    with SSHServer(tmp_path / "sshd") as server:
        server.url("/srv/store")     # ssh://root@127.0.0.1:<port>/srv/store
        server.client_key            # private key the server accepts (keyfile for dvc-ssh)
        server.known_hosts           # a known_hosts file that trusts this server's host key

Two servers, both real SSH + SFTP over TCP (nothing in DVC or dvc-ssh is replaced):

* ``openssh``: Debian's OpenSSH ``sshd -D`` (``apt-get install -y openssh-server``; .ci/run installs
  it and sets ``ROADWORK_TEST_SSH=openssh,asyncssh`` so that CI runs the tests against both);
* ``asyncssh``: the SSH/SFTP server of asyncssh (already installed: dvc-ssh's own SSH library),
  run as a separate process (tests/kit/asyncssh_server.py), so that the README's test command passes
  on a machine that has only Python and git.

``SSH_BACKENDS`` lists the servers to test: ``ROADWORK_TEST_SSH`` if set (comma-separated; a
named server that is missing FAILS the test, saying how to install it, rather than skipping),
else OpenSSH where ``/usr/sbin/sshd`` exists, else asyncssh.

Everything (host key, client key, config, pid file, log) lives in the given folder; the server
listens on 127.0.0.1 only, on a free port, accepts only the generated key, and is stopped when
the context ends.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncssh
import pytest

SSHD = os.environ.get("ROADWORK_TEST_SSHD", "/usr/sbin/sshd")
INSTALL_HINT = (
    "openssh-server is not installed (no {sshd}): install it with "
    "`apt-get update && apt-get install -y openssh-server` (.ci/run does this)"
)
ASYNCSSH_SERVER = Path(__file__).with_name("asyncssh_server.py")


def _backends() -> list[str]:
    named = os.environ.get("ROADWORK_TEST_SSH", "")
    if named:
        return [name.strip() for name in named.split(",") if name.strip()]
    return ["openssh"] if os.path.isfile(SSHD) else ["asyncssh"]


SSH_BACKENDS = _backends()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path, comment: str) -> None:
    """An ed25519 key pair: `path` (OpenSSH private key format) and `path`.pub."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    key.write_private_key(str(path))
    key.write_public_key(f"{path}.pub")
    Path(path).chmod(0o600)


class SSHServer:
    """An SSH + SFTP server on 127.0.0.1:<free port> with generated keys; a context manager.
    `backend`: "openssh" (`sshd -D`) or "asyncssh" (tests/kit/asyncssh_server.py)."""

    def __init__(self, folder: Path, backend: str | None = None, start_timeout: float = 15.0):
        if (backend or SSH_BACKENDS[0]) not in ("openssh", "asyncssh"):
            raise ValueError(f"unknown SSH server {backend!r}: openssh or asyncssh (ROADWORK_TEST_SSH)")
        self.backend = backend or SSH_BACKENDS[0]
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
        if self.backend == "openssh" and not (os.path.isfile(SSHD) and os.access(SSHD, os.X_OK)):
            pytest.fail(INSTALL_HINT.format(sshd=SSHD), pytrace=False)
        self.folder.mkdir(parents=True, exist_ok=True)
        keygen(self.host_key, "roadwork-test-host")
        keygen(self.client_key, "roadwork-test-client")
        self.authorized_keys.write_text(Path(f"{self.client_key}.pub").read_text())
        self.authorized_keys.chmod(0o600)
        if self.backend == "asyncssh":
            return
        if os.geteuid() == 0:
            # privilege separation directory; Debian's init script creates it, we start sshd ourselves
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        self.config.write_text(
            "\n".join(
                [
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
                    "StrictModes no",  # the test's folders live under /tmp with loose modes
                    "UseDNS no",
                    "Subsystem sftp internal-sftp",  # dvc-ssh talks SFTP; no dependency on sftp-server's path
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        check = subprocess.run([SSHD, "-t", "-f", str(self.config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd rejects the generated config:\n{check.stderr}")

    def _start_once(self) -> bool:
        self.port = _free_port()
        log = self.log.open("ab")
        if self.backend == "openssh":
            command = [SSHD, "-D", "-e", "-f", str(self.config), "-p", str(self.port)]
        else:
            command = [
                sys.executable,
                str(ASYNCSSH_SERVER),
                "--port",
                str(self.port),
                "--host-key",
                str(self.host_key),
                "--authorized-keys",
                str(self.authorized_keys),
            ]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
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
        raise RuntimeError(
            f"sshd did not answer on {self.host}:{self.port} within {self.start_timeout}s:\n"
            f"{self.log.read_text(errors='replace')[-3000:]}"
        )

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

    def check(self) -> str | None:
        """Log in with the client key, checking the host key, and list / over SFTP (what dvc-ssh
        does), independently of DVC. None if that works, else the error."""

        async def sftp_listing():
            async with asyncssh.connect(
                self.host,
                self.port,
                username=self.user,
                client_keys=[str(self.client_key)],
                known_hosts=str(self.known_hosts),
            ) as connection:
                async with connection.start_sftp_client() as sftp:
                    return await sftp.listdir("/")

        try:
            asyncio.run(asyncio.wait_for(sftp_listing(), 30))
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as error:
            return f"{type(error).__name__}: {error}"
        return None

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


@pytest.fixture(params=SSH_BACKENDS)
def sshd(request, tmp_path_factory):
    """A running SSHServer for one test (once per server in SSH_BACKENDS), stopped afterwards."""
    with SSHServer(tmp_path_factory.mktemp("sshd"), request.param) as server:
        yield server
