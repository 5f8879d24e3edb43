"""``python -m freshet.devstack run|up|down|status|watch``: the developer stack's command line.

``run`` starts everything in the foreground (Ctrl-C stops it), ``up`` the same in the
background, ``down`` stops it, ``status`` shows it, ``watch TOPIC`` prints a topic's records.
Settings come from ``FRESHET_*`` variables (:class:`~freshet.devstack.config.DevstackSettings`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from freshet.devstack import background
from freshet.devstack.config import DevstackSettings
from freshet.devstack.stack import Stack
from freshet.devstack.watch import watch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m freshet.devstack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start the stack in the foreground; Ctrl-C stops it")
    commands.add_parser("up", help="start the stack in the background")
    commands.add_parser("down", help="stop the background stack")
    commands.add_parser("status", help="show what runs and its health")
    watch_cmd = commands.add_parser("watch", help="print a topic's records as JSON lines")
    watch_cmd.add_argument("topic", help="e.g. shop.public.orders")
    watch_cmd.add_argument(
        "--from-end",
        action="store_true",
        help="only records written from now on (default: from the beginning)",
    )
    watch_cmd.add_argument("--bootstrap", help="Kafka bootstrap servers (default: the stack's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = DevstackSettings()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "run":
        return Stack(settings).run()
    if args.command == "up":
        return background.up(settings)
    if args.command == "down":
        return background.down(settings)
    if args.command == "status":
        return background.status(settings)
    code = watch(args.bootstrap or settings.kafka_bootstrap, args.topic, from_end=args.from_end)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): silence the flush at interpreter exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code


if __name__ == "__main__":
    sys.exit(main())
