"""The ``roadwork`` command (console script declared in pyproject.toml).

    roadwork predict PATH... --bundle DIR [--out predictions.csv] [--multiview] [--flip-tta]
                     [--batch-size N]
    roadwork publish [--bundle data/bundle] [--out publish] [--hotkey KEY] [--repo USER/NAME]

Pipeline stages are not subcommands: they run through DVC (``dvc repro``) or
``python -m roadwork.stages.<name>``.
"""

from __future__ import annotations

import sys
from typing import Sequence

COMMANDS = {
    "predict": "roadwork probabilities for image files and folders, written to a CSV",
    "publish": "write what the subnet asks a miner to publish to a folder; push it to Hugging Face",
}


def usage() -> str:
    lines = ["usage: roadwork COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    lines += ["", "Run `roadwork COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from roadwork.log import setup as setup_logging

    setup_logging()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "predict":
        from roadwork.predict import main as predict_main

        return predict_main(rest, prog="roadwork predict")
    if command == "publish":
        from roadwork.miner.publish import main as publish_main

        return publish_main(rest, prog="roadwork publish")
    print(f"roadwork: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
