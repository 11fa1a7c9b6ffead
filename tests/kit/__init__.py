"""The tests' shared kit (one place for helpers; test modules import from here, never from each other):

- kit.repo: a throwaway git+DVC copy of this working tree, dvc/git runners, the TINY pipeline params,
  dvc.yaml's stages expanded, digests and contents of file trees;
- kit.train: a tiny on-disk dataset (data/raw + data/split) and params for training;
- kit.images: small pictures (PIL images, JPEG bytes);
- kit.bundles: trained-model directories, miner bundles, and workspaces up to calibrate/export;
- kit.sshd: an SSH server on loopback for the remote tests (OpenSSH, or kit/asyncssh_server.py).

Fixtures live in tests/conftest.py. tests/ is on sys.path (pytest's rootdir conftest), so ``import kit``
works from every test module and from tests/miner_env_check.py.
"""
