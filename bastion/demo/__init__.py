"""`bastion demo`: everything needed to try bastion, on loopback, started and stopped by one command.

A throwaway PostgreSQL cluster with the sample shop data, a private sshd as SSH target, a generated config
with alice, bob and carol, and optionally a private sshd front door — all in one temporary directory that is
removed, with every process the demo started, when it exits. The modules split that by concern: cluster, seed,
sshd (shared by the target, the front door and the tests), sshtarget, frontdoor, config, layout, system, run.
"""

from __future__ import annotations


class DemoError(Exception):
    """The demo cannot start or go on; the message is one line for the operator, never a secret."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
