"""An SSH + SFTP server for tests, from asyncssh (the SSH library dvc-ssh itself uses): the
fallback of tests/kit/sshd.py where Debian's OpenSSH server is not installed.

    python tests/kit/asyncssh_server.py --port P --host-key KEY --authorized-keys FILE

Listens on 127.0.0.1:P until killed; accepts only the public keys in FILE (no passwords); serves
SFTP over the real file system (absolute paths, as OpenSSH's internal-sftp without a chroot).
"""

import argparse
import asyncio

import asyncssh


async def serve(port: int, host_key: str, authorized_keys: str) -> None:
    server = await asyncssh.listen(
        "127.0.0.1",
        port,
        server_host_keys=[host_key],
        authorized_client_keys=authorized_keys,
        password_auth=False,
        kbdint_auth=False,
        sftp_factory=True,
        allow_scp=False,
    )
    await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host-key", required=True)
    parser.add_argument("--authorized-keys", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.host_key, args.authorized_keys))


if __name__ == "__main__":
    main()
