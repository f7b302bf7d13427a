"""The `bastion` command: every subcommand, and the one place that turns errors into exit codes.

Exit codes: 0 success, 1 refused or failed (one line on stderr), 2 bad usage or bad config. No traceback
ever reaches a user: the login shell's stderr is their terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bastion.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config


class Fail(Exception):
    """Refused or failed: print the message, exit with code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _config_path(args: argparse.Namespace) -> str:
    return args.config or os.environ.get("BASTION_CONFIG") or DEFAULT_CONFIG_PATH


def _load(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args))


# ---------------------------------------------------------------- subcommands


def cmd_config_check(args: argparse.Namespace) -> int:
    config = _load(args)
    print(
        f"{config.path}: OK — bastion {config.bastion.name!r}, {len(config.users)} users, "
        f"{len(config.roles)} roles, {len(config.connections)} connections, "
        f"{sum(not p.builtin for p in config.policies.values())} custom policies; "
        f"config hash sha256:{config.hash[:16]}…"
    )
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from bastion.audit.signing import SigningKeyError, generate_key, key_id, load_public_key

    path = Path(args.path) if args.path else _load(args).audit.signing_key
    try:
        created = generate_key(path)
        kid = key_id(load_public_key(Path(f"{path}.pub")))
    except SigningKeyError as exc:
        raise Fail(str(exc)) from None
    if created:
        print(f"created {path} (0600) and {path}.pub — key id {kid}")
    else:
        print(f"{path} already exists; not overwritten — key id {kid}")
    return 0


def cmd_authorized_keys(args: argparse.Namespace) -> int:
    from bastion.frontdoor import authorize_key

    config = _load(args)
    line, refusal = authorize_key(config, args.account, args.key_type, args.key_blob)
    if line:
        print(line)
    elif refusal is not None:
        _audit_key_refusal(config, refusal)
    return 0


def _audit_key_refusal(config: Config, refusal: dict[str, str]) -> None:
    """An unknown or disabled key knocking is evidence too. Never durable (sshd waits on us), never in the
    way (sshd refuses the key regardless), and rate-limited: a stranger looping over random keys must not
    be able to fill the audit log's disk (sshd's own log still has every attempt)."""
    import contextlib

    from bastion.session import open_audit_log

    with contextlib.suppress(Exception):
        allowed, suppressed = _refusal_window(config.audit.log.parent / "key_refused.window")
        if not allowed:
            return
        log = open_audit_log(config)
        if suppressed:
            log.append(
                "key_refused_suppressed", {"count": suppressed}, session=None, user=None, durable=False
            )
        log.append("key_refused", refusal, session=None, user=refusal.get("user"), durable=False)


KEY_REFUSALS_PER_MINUTE = 20


def _refusal_window(path: Path) -> tuple[bool, int]:
    """(may this refusal be audited, refusals suppressed in the previous window) under a file lock."""
    import fcntl
    import time

    now = int(time.time() // 60)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the audit log's directory
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            window, count, suppressed = (int(x) for x in f.read().split())
        except ValueError:
            window, count, suppressed = now, 0, 0
        carried = 0
        if window != now:
            carried, window, count, suppressed = suppressed, now, 0, 0
        allowed = count < KEY_REFUSALS_PER_MINUTE
        count, suppressed = (count + 1, suppressed) if allowed else (count, suppressed + 1)
        f.seek(0)
        f.truncate()
        f.write(f"{window} {count} {suppressed}\n")
    return allowed, carried


def cmd_sshd_config(args: argparse.Namespace) -> int:
    from bastion.frontdoor import bastion_command, check_authorized_keys_program, sshd_config_snippet

    config = _load(args)
    sys.stdout.write(sshd_config_snippet(config, keys_user=args.keys_user))
    problem = check_authorized_keys_program(bastion_command(config))
    if problem:
        print(f"bastion: warning: sshd will refuse the AuthorizedKeysCommand: {problem}", file=sys.stderr)
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from bastion.audit.signing import SigningKeyError, load_public_key
    from bastion.audit.verify import verify_log

    config: Config | None = None
    if args.path and args.key:
        log_path, key_path = Path(args.path), Path(args.key)
    else:
        config = _load(args)
        log_path = Path(args.path) if args.path else config.audit.log
        key_path = Path(args.key) if args.key else Path(f"{config.audit.signing_key}.pub")
    try:
        public_key = load_public_key(key_path)
    except SigningKeyError as exc:
        raise Fail(str(exc)) from None
    if not log_path.exists():
        raise Fail(f"{log_path}: no audit log there")
    report = verify_log(log_path, public_key)
    code = 0
    if report.ok:
        counts = f"{report.events} events, {report.checkpoints} checkpoints, last seq {report.last_seq}"
        print(f"{log_path}: OK — {counts}")
    else:
        assert report.problem is not None
        print(f"{log_path}: FAILED — {report.problem.message}")
        code = 1
    # recording: casts against their signed manifests (bastion/recording/verify.py)
    from bastion.recording.verify import other_copies, print_report, recordings_dir, verify_recordings

    directory = recordings_dir(args.recordings, log_path, config, complete=args.complete)
    if directory is not None:
        with other_copies(config, directory) as elsewhere:
            recordings = verify_recordings(
                directory, [public_key], log_path, complete=args.complete, elsewhere=elsewhere
            )
        print_report(recordings)
        code = code or (0 if recordings.ok else 1)
    return code


def cmd_ship(args: argparse.Namespace) -> int:
    """Drain the spool to the sink: end and seal dead sessions, ship, verify, apply retention."""
    from bastion.recording.ship import run_ship
    from bastion.session import SessionError, connect_store, open_audit_log

    config = _load(args)
    try:
        store = connect_store(config)
        audit = open_audit_log(config)
    except SessionError as exc:
        raise Fail(str(exc)) from None
    try:
        return run_ship(config, store, audit, once=args.once, interval=max(0.2, args.interval))
    finally:
        store.close()
        audit.close()


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Verdicts for a user on a connection; runs nothing. Exit 0 when every statement would run, else 1."""
    import json

    from bastion.identity.roles import access
    from bastion.policy.sql import classify, split_statements
    from bastion.policy.verdict import Verdict, decide
    from bastion.session import SessionError, connect_store

    config = _load(args)
    if args.user not in config.users:
        raise Fail(f"unknown user {args.user!r}", 2)
    if args.connection not in config.connections:
        raise Fail(f"unknown connection {args.connection!r}", 2)
    words = args.sql[1:] if args.sql[:1] == ["--"] else args.sql
    text = " ".join(words).strip()
    if not text:
        raise Fail("no SQL given: bastion policy check ... -- STATEMENT", 2)
    try:
        store = connect_store(config)
    except SessionError as exc:
        raise Fail(str(exc)) from None
    try:
        allowed = access(config, store, args.user, args.connection)
    finally:
        store.close()
    if not allowed.allowed or allowed.policy is None:
        raise Fail(f"{args.user} may not use {args.connection}: {allowed.reason}")
    decisions = [decide(allowed.policy, classify(statement)) for statement in split_statements(text)]
    if not decisions:
        raise Fail("no SQL statement in the input (only comments or semicolons)", 2)
    for index, decision in enumerate(decisions, start=1):
        c = decision.classification
        if args.json:
            print(json.dumps({
                "index": index, "statement": c.text, "class": c.sql_class.value,
                "classes": sorted(x.value for x in c.classes), "verdict": decision.verdict.value,
                "policy": decision.policy, "reasons": list(decision.reasons),
                "warnings": list(decision.warnings),
            }))  # fmt: skip
            continue
        print(f"{index:>3}  {decision.verdict.value:<15} {c.sql_class.value:<10} {_shorten(c.text)}")
        for reason in decision.reasons:
            print(f"       - {reason}")
        for warning in decision.warnings:
            print(f"       ! {warning}")
    return 0 if all(d.verdict is Verdict.ALLOW for d in decisions) else 1


def _shorten(text: str, width: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def cmd_login(args: argparse.Namespace) -> int:
    from bastion.login import login

    return login(_load(args), args.key)


def cmd_demo(args: argparse.Namespace) -> int:
    """Everything needed to try bastion, on loopback; bastion.demo does the work, here only exit codes."""
    from bastion.demo import DemoError
    from bastion.demo.run import DemoOptions, run_demo

    try:
        return run_demo(DemoOptions(as_user=args.as_user, headless=args.headless, sshd_port=args.sshd))
    except DemoError as exc:
        raise Fail(str(exc), exc.code) from None


# ---------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise Fail(f"{self.prog}: {message}", 2)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--config", metavar="PATH", help=f"config file (default $BASTION_CONFIG or {DEFAULT_CONFIG_PATH})"
    )
    parser = _Parser(prog="bastion", description="privileged-access gateway")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    config = sub.add_parser("config", help="configuration commands")
    config_sub = config.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    check = config_sub.add_parser("check", parents=[common], help="validate the config; exit 2 on problems")
    check.set_defaults(func=cmd_config_check)

    keygen = sub.add_parser(
        "keygen", parents=[common], help="create the audit signing key when there is none"
    )
    keygen.add_argument("--path", help="key path (default: audit.signing_key from the config)")
    keygen.set_defaults(func=cmd_keygen)

    akc = sub.add_parser(
        "authorized-keys",
        parents=[common],
        help="sshd AuthorizedKeysCommand: print the line for a registered key",
    )
    akc.add_argument("account", help="the account sshd is authenticating (%%u)")
    akc.add_argument("key_type", help="key type (%%t)")
    akc.add_argument("key_blob", help="base64 key (%%k)")
    akc.set_defaults(func=cmd_authorized_keys)

    sshd = sub.add_parser("sshd-config", parents=[common], help="print a hardened sshd_config snippet")
    sshd.add_argument("--keys-user", help="AuthorizedKeysCommandUser (default: the service account)")
    sshd.set_defaults(func=cmd_sshd_config)

    audit = sub.add_parser("audit", help="audit log commands")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, parser_class=_Parser)
    verify = audit_sub.add_parser(
        "verify", parents=[common], help="check the audit log's chain and signatures"
    )
    verify.add_argument("path", nargs="?", help="audit log (default: audit.log from the config)")
    verify.add_argument("--key", help="public key file (default: audit.signing_key + .pub)")
    verify.add_argument(
        "--recordings", metavar="DIR", help="session recordings to check (default: sessions/ beside audit/)"
    )
    verify.add_argument(
        "--complete",
        action="store_true",
        help="every recording the log says was sealed must be in DIR; every one it says started must be "
        "in DIR, the spool or the sink",
    )
    verify.set_defaults(func=cmd_audit_verify)

    ship = sub.add_parser(
        "ship", parents=[common], help="ship the spool's recordings and audit log to the sink (a service)"
    )
    ship.add_argument("--once", action="store_true", help="one pass, then exit (what every login nudges)")
    ship.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between passes")
    ship.set_defaults(func=cmd_ship)

    policy = sub.add_parser("policy", help="policy commands")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True, parser_class=_Parser)
    pcheck = policy_sub.add_parser(
        "check",
        parents=[common],
        help="print the verdict on each statement for a user and connection; runs nothing",
    )
    pcheck.add_argument("--user", required=True)
    pcheck.add_argument("--connection", required=True)
    pcheck.add_argument("--json", action="store_true", help="one JSON object per statement")
    pcheck.add_argument("sql", nargs=argparse.REMAINDER, help="-- SQL")
    pcheck.set_defaults(func=cmd_policy_check)

    login = sub.add_parser("login", parents=[common], help="the login shell sshd runs for a user's key")
    login.add_argument(
        "--key", required=True, metavar="SHA256:…", help="fingerprint of the key sshd accepted"
    )
    login.set_defaults(func=cmd_login)

    demo = sub.add_parser(
        "demo", help="start PostgreSQL, an SSH target and a config on loopback; open the TUI as alice"
    )
    demo.add_argument("--as", dest="as_user", metavar="USER", help="open a TUI as USER on the running demo")
    demo.add_argument(
        "--headless", action="store_true", help="no TUI: print one JSON line, run until SIGINT/SIGTERM"
    )
    demo.add_argument("--sshd", type=int, metavar="PORT", help="also an sshd front door on 127.0.0.1:PORT")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from bastion.frontdoor import FrontDoorError
    from bastion.runtime import tune_gc

    tune_gc()
    try:
        args = build_parser().parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except (Fail, FrontDoorError) as exc:
        print(f"bastion: {exc}", file=sys.stderr)
        return exc.code if isinstance(exc, Fail) else 1
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.path}: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bastion: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # the last wall: a user never sees a traceback
        _log_internal_error(exc)
        print(
            f"bastion: internal error ({type(exc).__name__}); details are in the system log", file=sys.stderr
        )
        return 1


def _log_internal_error(exc: BaseException) -> None:
    """Frames only, to syslog: exception messages may carry hostile or secret text."""
    import syslog
    import traceback

    frames = "; ".join(f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_tb(exc.__traceback__))
    try:
        syslog.openlog("bastion", syslog.LOG_PID, syslog.LOG_AUTH)
        syslog.syslog(syslog.LOG_ERR, f"internal error {type(exc).__name__} at {frames}")
    except OSError:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
