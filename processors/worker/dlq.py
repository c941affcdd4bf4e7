"""The `realtime dlq` command: list, replay and drop dead letters (`rt:dead`)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from processors.worker.dead_letters import DeadLetter, DeadLetterStore
from realtime.core import jsoncodec
from realtime.core.connections import connect
from realtime.core.keys import Keys
from realtime.core.settings import Settings

PAGE = 500


def format_letter(letter: DeadLetter) -> str:
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(letter.at / 1000))
    entry = " ".join(f"{k}={v.decode('utf-8', 'replace')}" for k, v in letter.fields.items())
    return (
        f"{letter.id}  {at}Z  {letter.stream} {letter.entry_id}  attempts={letter.attempts}\n"
        f"    error: {letter.error}\n"
        f"    entry: {entry}"
    )


async def _selected(store: DeadLetterStore, args: argparse.Namespace) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    if not args.all:
        letters = await store.get(args.ids)
        missing = set(args.ids) - {letter.id for letter in letters}
        if missing:
            raise LookupError(f"no dead letter with id {', '.join(sorted(missing))}")
        return letters
    # Everything there now; letters added while we work wait for the next run.
    while page := await store.page(PAGE, after=letters[-1].id if letters else None):
        letters += page
    return letters


async def run_dlq(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    redis = connect(settings)
    store = DeadLetterStore(redis, Keys.of(settings), settings.partitions)
    try:
        if args.action == "list":
            letters = await store.page(args.limit, after=args.after)
            for letter in letters:
                print(
                    jsoncodec.dumps(letter.to_json()) if args.json else format_letter(letter),
                    file=out,
                )
            if not args.json:
                print(f"{len(letters)} shown, {await store.count()} in {store.key}", file=out)
            return 0
        if not args.all and not args.ids:
            print(f"realtime dlq {args.action}: give record ids or --all", file=sys.stderr)
            return 2
        try:
            letters = await _selected(store, args)
        except LookupError as exc:
            print(f"realtime dlq {args.action}: {exc}", file=sys.stderr)
            return 1
        if args.action == "replay":
            for letter, new_id in await store.replay(letters):
                print(f"replayed {letter.id} as {store.target_stream(letter)} {new_id}", file=out)
        else:
            print(f"dropped {await store.drop(letters)}", file=out)
        return 0
    finally:
        await redis.aclose()


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    dlq = sub.add_parser(
        "dlq",
        help="show, replay or drop dead letters (entries the worker gave up on)",
        description="Dead letters are ingest entries the worker gave up on, with the error. "
        "replay re-queues an entry on its topic's ingest stream (it gets a new id, after the "
        "events that went past it) and removes the record.",
    )
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="show dead letters, oldest first")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.add_argument("--after", metavar="ID", help="start after this record id")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    for name, verb in (("replay", "re-queue"), ("drop", "delete")):
        action = actions.add_parser(name, help=f"{verb} dead letters")
        action.add_argument("ids", nargs="*", metavar="ID", help="record ids (from `list`)")
        action.add_argument("--all", action="store_true", help=f"{verb} every dead letter")
    return dlq
