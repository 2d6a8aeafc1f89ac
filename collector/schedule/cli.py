"""``bridgewatch-collector schedule``: check, import and list the sessions of the schedule.

    schedule check  FILE --inventory INV [--db PATH]   validate only (with --db: against
                                                       the stored sessions too)
    schedule import FILE --inventory INV --db PATH     all-or-nothing into the store
                    [--skip-past]                      (past sessions: a warning, left out)
    schedule list   --db PATH [--all]                  upcoming sessions (--all: every one)
    schedule delete ID --db PATH                       remove one session

FILE is YAML or iCalendar (by its name, else its content). Problems are printed as
``file:line: lỗi/error: <Vietnamese> / <English>`` (``--lang vi`` or ``en`` for one
language). Exit status: 0 done, 1 the schedule has errors (nothing stored), 2 the command
could not run (usage, unreadable inventory or database).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TextIO

from collector.inventory import Inventory, InventoryError, load_inventory
from collector.readiness.model import VIETNAM, Session
from collector.readiness.store import Store, StoreError

from . import check_file, import_file
from .durations import format_duration
from .validate import LANGS, ImportResult
from .yamlfile import StartError, parse_start

PROG = "bridgewatch-collector schedule"


def _say(lang: str, vi: str, en: str) -> str:
    return vi if lang == "vi" else en if lang == "en" else f"{vi} / {en}"


def _now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(VIETNAM)
    try:
        return parse_start(text)
    except StartError:
        raise argparse.ArgumentTypeError(f"--now {text!r}: not a date and time") from None


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--lang", choices=LANGS, default="both",
                        help="language of messages (default: Vietnamese and English)")
    common.add_argument("--now", help=argparse.SUPPRESS)  # tests: a fixed "now"
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", parents=[common],
                                help="validate a schedule file, store nothing")
    check.add_argument("file")
    check.add_argument("--inventory", required=True)
    check.add_argument("--db", help="also check against the sessions stored here")
    imp = commands.add_parser("import", parents=[common], help="validate and store, all or nothing")
    imp.add_argument("file")
    imp.add_argument("--inventory", required=True)
    imp.add_argument("--db", required=True)
    imp.add_argument("--skip-past", action="store_true",
                     help="leave out past sessions with a warning instead of refusing the file")
    listing = commands.add_parser("list", parents=[common], help="the upcoming sessions")
    listing.add_argument("--db", required=True)
    listing.add_argument("--all", action="store_true", help="past sessions too")
    delete = commands.add_parser("delete", parents=[common], help="remove one session")
    delete.add_argument("id")
    delete.add_argument("--db", required=True)
    return parser


def _report(result: ImportResult, lang: str, out: TextIO) -> None:
    for problem in result.issues:
        print(problem.format(lang), file=out)


def _counts(result: ImportResult, lang: str) -> str:
    errors, warnings = len(result.errors), len(result.warnings)
    return _say(lang, f"{errors} lỗi, {warnings} cảnh báo",
                f"{errors} error(s), {warnings} warning(s)")


def _inventory(path: str, lang: str, err: TextIO) -> Inventory | None:
    try:
        return load_inventory(path)
    except (InventoryError, OSError) as problem:
        print(_say(lang, f"không đọc được danh mục điểm cầu: {problem}",
                   f"cannot read the inventory: {problem}"), file=err)
        return None


def _width(text: str) -> int:
    """Columns on a terminal: combining marks (Vietnamese tones if decomposed) take none."""
    return sum(0 if unicodedata.combining(ch) else 1 for ch in text)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(_width(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell + " " * (w - _width(cell)) for cell, w in zip(row, widths,
                                                                         strict=True)).rstrip()
            for row in rows]


def _list(sessions: list[Session], lang: str, out: TextIO) -> None:
    heads = [("Mã phiên", "ID"), ("Bắt đầu", "Start"), ("Thời lượng", "Duration"),
             ("Chủ trì", "Host"), ("Số điểm cầu", "Bridges"), ("Tiêu đề", "Title")]
    rows = [[_say(lang, vi, en) for vi, en in heads]]
    for s in sessions:
        rows.append([s.id, f"{s.start.astimezone(VIETNAM):%Y-%m-%d %H:%M}",
                     format_duration(s.duration), s.host, str(len(s.bridges)),
                     unicodedata.normalize("NFC", s.title)])
    for line in _table(rows):
        print(line, file=out)


def _schedule(args: argparse.Namespace, now: datetime, out: TextIO, err: TextIO) -> int:
    """check / import: print every issue and a summary; 1 when the file has errors."""
    lang = args.lang
    inventory = _inventory(args.inventory, lang, err)
    if inventory is None:
        return 2
    if args.command == "check":
        existing: list[Session] = []
        if args.db:
            with Store(args.db) as store:
                existing = store.sessions()
        result = check_file(args.file, inventory, existing=existing, now=now)
    else:
        with Store(args.db) as store:
            result = import_file(store, args.file, inventory, now=now,
                                 past="skip" if args.skip_past else "error")
    _report(result, lang, out)
    importing = args.command == "import"
    if not result.ok:
        verdict = (_say(lang, "Không nhập gì", "Nothing imported") if importing
                   else _say(lang, "Không hợp lệ", "Invalid"))
        print(f"{verdict}: {_counts(result, lang)}", file=out)
        return 1
    n, changed, cancelled = len(result.sessions), len(result.changed), len(result.cancelled)
    detail = _say(lang, f"{n} phiên ({changed} mới hoặc thay đổi, {n - changed} không đổi, "
                        f"{cancelled} hủy)",
                  f"{n} session(s) ({changed} new or changed, {n - changed} unchanged, "
                  f"{cancelled} cancelled)")
    verdict = _say(lang, "Đã nhập", "Imported") if importing else _say(lang, "Hợp lệ", "Valid")
    print(f"{verdict}: {detail}; {_counts(result, lang)}", file=out)
    return 0


def _stored(args: argparse.Namespace, now: datetime, out: TextIO, err: TextIO) -> int:
    """list / delete."""
    lang = args.lang
    with Store(args.db) as store:
        if args.command == "delete":
            if store.delete_session(args.id):
                print(_say(lang, f"Đã xóa phiên '{args.id}'", f"Deleted session '{args.id}'"),
                      file=out)
                return 0
            print(_say(lang, f"Không có phiên '{args.id}'", f"No session '{args.id}'"),
                  file=err)
            return 1
        sessions = store.sessions() if args.all else store.sessions(since=now)
    if not sessions:
        print(_say(lang, "Không có phiên sắp tới", "No upcoming sessions"), file=out)
    else:
        _list(sessions, lang, out)
    return 0


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    """Run one command; the exit status (module docstring)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _parser().parse_args(argv)
        now = _now(args.now)
    except SystemExit as stop:  # usage error or --help: argparse has printed why
        return int(stop.code or 0)
    except argparse.ArgumentTypeError as problem:
        print(problem, file=err)
        return 2
    # Reading a database that is not there would create an empty one and answer "nothing":
    # only import creates the file.
    if args.command != "import" and getattr(args, "db", None) and not Path(args.db).exists():
        print(_say(args.lang, f"không có cơ sở dữ liệu {args.db}",
                   f"no database at {args.db}"), file=err)
        return 2
    try:
        if args.command in ("check", "import"):
            return _schedule(args, now, out, err)
        return _stored(args, now, out, err)
    except (sqlite3.Error, StoreError) as problem:
        print(_say(args.lang, f"lỗi cơ sở dữ liệu {args.db}: {problem}",
                   f"database error {args.db}: {problem}"), file=err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
