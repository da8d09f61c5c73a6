"""The `l3` command. Each subcommand parses its flags here and calls one library function.

Subcommands register themselves in `_COMMANDS` through `_command`; imports of heavy modules happen
inside the handlers so `l3 --help` stays fast.
"""
from __future__ import annotations

import argparse
import json
import sys

from l3_keras.errors import L3Error

_COMMANDS = []


def _command(fn):
    """Registers `fn(subparsers)`, which adds one subcommand and sets `handler`."""
    _COMMANDS.append(fn)
    return fn


@_command
def _info(sub):
    p = sub.add_parser("info", help="versions, devices seen by TensorFlow, model presets")

    def handler(args):
        import platform

        import keras
        import tensorflow as tf

        from l3_keras import __version__
        from l3_keras.config import PRESETS

        info = {
            "l3_keras": __version__,
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "devices": [d.name for d in tf.config.list_logical_devices()],
            "gpus": len(tf.config.list_physical_devices("GPU")),
            "presets": {name: cfg.to_dict() for name, cfg in PRESETS.items()},
        }
        print(json.dumps(info, indent=2))
        return 0

    p.set_defaults(handler=handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l3", description="L3-Net (Look, Listen and Learn) tools")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except L3Error as e:
        print(f"l3 {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
