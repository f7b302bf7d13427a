"""The optional approvals webhook: a JSON POST with Slack-compatible `text` on every new request and every
decision. The URL lives in a secret file (webhook URLs are credentials). A failed notification never blocks
or undoes a request: it is recorded as an audit event and the caller moves on.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from bastion.config import read_secret
from bastion.policy.detectors import redact
from bastion.units import format_duration

if TYPE_CHECKING:
    from bastion.session import Session
    from bastion.store.base import Grant, Request

TIMEOUT_S = 3.0
ATTEMPTS = 2  # one retry: a receiver restarting or a dropped connection should not lose the notice
RETRY_DELAY_S = 0.3


def slack_escape(text: str) -> str:
    """Slack reads `<!channel>`, `<@U…>` and `<url|label>` in text: a requester's statement or reason must
    not ping a channel or dress up a link in the approvers' chat. Slack's own escaping: & < >."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def message(bastion: str, what: str, request: Request) -> dict[str, Any]:
    """The payload: Slack reads `text`; other receivers get the structured fields too."""
    if request.kind == "statement":
        # The chat is outside the bastion: values the detectors recognise (emails, cards, SSNs, phones,
        # IBANs) leave as their kind; approvers read the whole statement in their tab or `approvals list`.
        statement, _ = redact(request.statement or "")
        subject = f"statement on {request.target}: {statement[:300]}"
    else:
        subject = f"elevation to {request.target} for {format_duration(request.duration_s or 0)}"
    who = {"request": f"{request.requester} asks for", "approve": "Approved:", "deny": "Denied:"}.get(
        what, what
    )
    reason, _ = redact(request.reason)
    text = f"[{bastion}] {who} {subject} (request {request.id}, {request.state}; reason: {reason[:200]})"
    return {
        "text": slack_escape(text),
        "bastion": bastion,
        "event": what,
        "request": request.id,
        "state": request.state,
        "requester": request.requester,
        "target": request.target,
        "kind": request.kind,
    }


def _post(url: str, body: bytes) -> None:
    req = urllib.request.Request(  # noqa: S310 - the caller checked the scheme
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as response:  # noqa: S310
        if response.status >= 300:
            raise urllib.error.HTTPError(url, response.status, "unexpected status", response.headers, None)


def notify_request(session: Session, what: str, request: Request) -> bool:
    """POST the notification if a webhook is configured; True when delivered (or none is configured)."""
    return _deliver(session, message(session.config.bastion.name, what, request), request.id, what)


def notify_revoked(session: Session, grant: Grant, by: str, reason: str) -> bool:
    """A grant ended early: approvers learn that access was taken back (or given back) and by whom."""
    subject = f"{grant.kind} grant of {grant.user} on {grant.target}"
    why = redact(reason)[0] if reason else "given back by its holder"
    bastion = session.config.bastion.name
    text = f"[{bastion}] Revoked by {by}: {subject} (grant {grant.id}; reason: {why[:200]})"
    payload = {
        "text": slack_escape(text),
        "bastion": bastion,
        "event": "revoke",
        "request": grant.request_id,
        "grant": grant.id,
        "state": grant.state,
        "requester": grant.user,
        "target": grant.target,
        "kind": grant.kind,
    }
    return _deliver(session, payload, grant.request_id, "revoke")


def _dropped(exc: OSError) -> bool:
    """Refused or reset: the notice did not arrive, so sending it again cannot duplicate it (a timeout may
    have arrived)."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, ConnectionRefusedError | ConnectionResetError)


def _deliver(session: Session, payload: dict[str, Any], request_id: str, what: str) -> bool:
    path = session.config.approvals.webhook_url_file
    if path is None:
        return True
    try:
        url = read_secret(path)
        if not url.startswith(("https://", "http://")):
            raise ValueError("the webhook URL must be http(s)")
        body = json.dumps(payload).encode("utf-8")
        for attempt in range(1, ATTEMPTS + 1):
            try:
                _post(url, body)
                return True
            except urllib.error.HTTPError:
                raise  # the receiver answered: retrying would not change its mind
            except OSError as exc:
                if attempt == ATTEMPTS or not _dropped(exc):
                    raise
                time.sleep(RETRY_DELAY_S)
        return False  # not reached: the last attempt returns or raises
    except Exception as exc:  # malformed replies, odd URLs too: a notice never breaks a request
        # The reason, never the URL: a webhook URL is a credential.
        reason = f"HTTP {exc.code}" if isinstance(exc, urllib.error.HTTPError) else type(exc).__name__
        session.event(
            "notify_failed", {"request": request_id, "event": what, "reason": reason}, durable=False
        )
        return False
