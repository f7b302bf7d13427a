"""Real OpenSSH sshd instances on loopback ports for tests: the front door and SSH targets.

Starting sshd safely is shared with `bastion demo` and lives in bastion/demo/sshd.py. What is test-only is
here: a workspace the service account owns, and the sshd-safe wrapper sshd calls as AuthorizedKeysCommand —
placed under /run (never /tmp), since sshd requires it and every parent to be root-owned and not
group/other-writable.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bastion.demo.sshd import (
    SERVICE_ACCOUNT,
    SSHD,
    Sshd,
    free_port,
    service_account,
    sshd_unavailable_reason,
    start_sshd,
    wait_for_port,
)
from bastion.demo.sshd import run_as as _run_as

__all__ = [
    "SERVICE_ACCOUNT",
    "SSHD",
    "Sshd",
    "Workspace",
    "free_port",
    "make_workspace",
    "service_account",
    "sshd_unavailable_reason",
    "start_sshd",
    "wait_for_port",
]

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Workspace:
    """A directory the service account owns, outside pytest's private tmp, plus the sshd-safe wrapper."""

    root: Path
    account: str
    wrapper: Path

    def chown(self) -> None:
        info = pwd.getpwnam(self.account)
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in [*dirnames, *filenames, "."]:
                os.chown(os.path.join(dirpath, name), info.pw_uid, info.pw_gid, follow_symlinks=False)

    def run_as(self, *argv: str) -> subprocess.CompletedProcess[str]:
        if self.account == "root":
            return subprocess.run(list(argv), capture_output=True, text=True)
        return _run_as(self.account, *argv)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.wrapper.parent, ignore_errors=True)


def make_workspace(account: str) -> Workspace:
    root = Path(tempfile.mkdtemp(prefix="bastion-e2e-", dir="/var/tmp"))
    os.chmod(root, 0o750)
    base = Path("/run/bastion-tests")
    base.mkdir(mode=0o755, exist_ok=True)
    os.chmod(base, 0o755)
    wrapper_dir = Path(tempfile.mkdtemp(prefix="w-", dir=base))
    os.chmod(wrapper_dir, 0o755)
    wrapper = wrapper_dir / "bastion"
    # The wrapper runs this checkout's bastion; sshd checks only the wrapper's own path.
    console_script = Path(sys.executable).parent / "bastion"
    wrapper.write_text(f'#!/bin/sh\nexec {console_script} "$@"\n')
    os.chmod(wrapper, 0o755)
    workspace = Workspace(root, account, wrapper)
    workspace.chown()
    return workspace
