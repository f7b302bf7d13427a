"""Headless `request` and `approvals`: just-in-time requests and decisions over ssh, with `--json` on each.

    request CONNECTION --reason TEXT [--json] -- STATEMENT
    request --elevate ROLE_OR_CONNECTION --for DURATION --reason TEXT [--json]
    approvals [list] [--json]
    approvals approve ID [--reason TEXT] [--json]
    approvals deny ID --reason TEXT [--json]
    approvals grants [--json]                   active grants you hold or may revoke
    approvals revoke GRANT_ID [--reason TEXT] [--json]   (a reason unless the grant is your own)

The same Approvals core as the TUI: the rules, the no-self-approval rule and every audit event are there.
Exit codes: 0 done, 1 refused (one line on stderr), 2 usage.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, TextIO

from bastion.units import format_duration, parse_duration

if TYPE_CHECKING:
    from bastion.approvals import Approvals
    from bastion.session import Session
    from bastion.store.base import Grant, Request


def _approvals(session: Session) -> Approvals:
    from bastion.approvals import for_session

    return for_session(session)


def request_summary(request: Request) -> dict[str, Any]:
    """The audit payload of a request, keyed by "id", with its creation time and decisions."""
    from bastion.approvals import request_payload

    payload = request_payload(request)
    return {
        "id": payload.pop("request"),
        **payload,
        "created_at": request.created_at,
        "decisions": [{k: d[k] for k in ("approver", "decision", "reason", "at")} for d in request.decisions],
    }


def _print(out: TextIO, request: Request, as_json: bool) -> None:
    from bastion.headless import _clean_line

    if as_json:
        out.write(json.dumps(request_summary(request), ensure_ascii=True) + "\n")
        return
    what = (
        _clean_line(request.statement or "", 80)
        if request.kind == "statement"
        else f"elevation for {format_duration(request.duration_s or 0)}"
    )
    head = f"{request.id}  {request.state:<9} {request.kind:<9} {request.requester:<12} {request.target:<16}"
    out.write(f"{head} {what}\n")


def run_request(session: Session, args: list[str], out: TextIO, err: TextIO) -> int:
    """`request`: a statement request (after `--`) or an elevation request (`--elevate`)."""
    from bastion.approvals import ApprovalError
    from bastion.headless import UsageError, _clean_line, _Parser

    statement = None
    if "--" in args:
        cut = args.index("--")
        args, statement = args[:cut], " ".join(args[cut + 1 :])
    parser = _Parser("request")
    parser.add_argument("connection", nargs="?")
    parser.add_argument("--elevate", metavar="ROLE_OR_CONNECTION")
    parser.add_argument("--for", dest="duration", metavar="DURATION")
    parser.add_argument("--reason", required=True)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args(args)
    approvals = _approvals(session)
    user = session.user.name
    try:
        if opts.elevate:
            if statement is not None or opts.connection:
                raise UsageError("request: --elevate takes no connection and no statement")
            if not opts.duration:
                raise UsageError("request: --elevate needs --for DURATION (e.g. 30m, 2h)")
            try:
                duration = parse_duration(opts.duration)
            except ValueError as exc:
                raise UsageError(f"request: {exc}") from None
            request = approvals.request_elevation(user, opts.elevate, duration, opts.reason)
        else:
            if not opts.connection or not statement or not statement.strip():
                raise UsageError("request: CONNECTION --reason TEXT -- STATEMENT")
            request = approvals.request_statement(user, opts.connection, statement, opts.reason)
    except ApprovalError as exc:
        err.write(f"bastion: request refused: {_clean_line(str(exc), 200)}\n")
        return 1
    notify(session, "request", request)
    if opts.json:
        out.write(json.dumps(request_summary(request), ensure_ascii=True) + "\n")
    else:
        out.write(f"{request.id}\n")
        left = format_duration(request.expires_at - time.time())
        err.write(f"bastion: request {request.id} is pending; it expires in {left}\n")
    return 0


def grant_summary(grant: Grant) -> dict[str, Any]:
    return {
        "grant": grant.id, "request": grant.request_id, "user": grant.user, "kind": grant.kind,
        "target": grant.target, "state": grant.state, "granted_at": grant.granted_at,
        "expires_at": grant.expires_at,
    }  # fmt: skip


def _print_grant(out: TextIO, grant: Grant, as_json: bool) -> None:
    if as_json:
        out.write(json.dumps(grant_summary(grant), ensure_ascii=True) + "\n")
        return
    left = format_duration(max(0.0, grant.expires_at - time.time()))
    head = f"{grant.id}  {grant.state:<8} {grant.kind:<9} {grant.user:<12} {grant.target:<16}"
    out.write(f"{head} {left} left\n")


def _print_all(out: TextIO, err: TextIO, items: list[Any], printer: Any, as_json: bool, what: str) -> None:
    for item in items:
        printer(out, item, as_json)
    if not items and not as_json:
        err.write(f"bastion: no {what}\n")


def run_approvals(session: Session, args: list[str], out: TextIO, err: TextIO) -> int:
    """`approvals [list | approve ID | deny ID | grants | revoke GRANT_ID]`."""
    from bastion.approvals import ApprovalError
    from bastion.headless import UsageError, _clean_line, _Parser

    parser = _Parser("approvals")
    parser.add_argument(
        "action", nargs="?", default="list", choices=["list", "approve", "deny", "grants", "revoke"]
    )
    parser.add_argument("id", nargs="?")
    parser.add_argument("--reason", default="")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args(args)
    approvals = _approvals(session)
    user = session.user.name
    if opts.action == "list":
        approvals.expire_stale()
        _print_all(
            out, err, approvals.pending_for(user), _print, opts.json, "pending requests you may decide"
        )
        return 0
    if opts.action == "grants":
        _print_all(
            out, err, approvals.revocable_for(user), _print_grant, opts.json, "active grants you may end"
        )
        return 0
    if not opts.id:
        what = "grant" if opts.action == "revoke" else "request"
        raise UsageError(f"approvals {opts.action}: which {what}? approvals {opts.action} ID --reason TEXT")
    if opts.action == "revoke":
        try:
            grant = approvals.revoke(opts.id, user, opts.reason)
        except ApprovalError as exc:
            err.write(f"bastion: revoke refused: {_clean_line(str(exc), 200)}\n")
            return 1
        from bastion.notify import notify_revoked

        notify_revoked(session, grant, user, opts.reason)
        _print_grant(out, grant, opts.json)
        return 0
    try:
        request = approvals.decide(opts.id, user, opts.action, opts.reason)
    except ApprovalError as exc:
        err.write(f"bastion: {opts.action} refused: {_clean_line(str(exc), 200)}\n")
        return 1
    notify(session, opts.action, request)
    _print(out, request, opts.json)
    return 0


def notify(session: Session, what: str, request: Request) -> None:
    """The optional webhook; a failure never blocks the request (see bastion.notify)."""
    from bastion.notify import notify_request

    notify_request(session, what, request)
