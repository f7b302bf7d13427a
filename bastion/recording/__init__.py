"""Session recording: asciicast v2 casts in a local spool, shipped off-host while the session runs.

Recordings are the evidence the product exists to produce, so the design optimises for "nothing lost, nothing
altered unnoticed" first and for cost second.

Who records
    `bastion login` forks the TUI as a child on a pty of its own (recorder.py) right after the session started
    and before textual is imported. The parent stays a small relay: user input → child, child output → cast
    file → user (recorded BEFORE it is shown, so in strict mode nothing reaches the screen unrecorded). The
    child sends the seq and type of every audit event it writes over a pipe; the parent turns statements,
    commands, approvals and masking decisions into "m" markers labelled `audit:<seq> <type> …`. Headless runs
    are recorded in-process (their stdout/stderr tee'd into a cast). Panes record target streams as channel
    casts of their own (channel.py); the SQL pipeline's transcript is the first.

Spool (spool.py) — layout under [bastion].spool
    sessions/<session-id>/session.cast       the session cast
    sessions/<session-id>/sql-<n>-<conn>.cast channel casts
    sessions/<session-id>/manifest.json      the signed manifest, written when the recording is sealed
    sessions/<session-id>/.seal-reserve      room reserved at the start so the seal fits on a full disk
    sessions/<session-id>/.shipped           stamp: the sink acknowledged everything (mtime = when)
    audit/<bastion>.jsonl (+ .head)          the audit log (its default place), shipped as well
    .ship/                                   locks and the nudge stamp
The process that owns a session holds an exclusive flock on its directory for as long as it (or its TUI
child, which inherits the descriptor) lives; an unlocked directory without a manifest therefore belongs to a
dead process, and `bastion ship` seals it.

Shipping (ship.py, sinks.py)
    The login's parent ships its own session every TICK_S in a thread (and the audit log, under a try-lock
    so one process at a time does it); `bastion ship` (a service, and nudged — detached `--once` — by every
    login) drains whatever is left. A stream is shipped by position: bytes [acked, size) are written at
    offset `acked` on the sink, the sink fsyncs, and only then is the new offset committed to the state
    store (`Store.set_progress`, key `ship:<sink-id>:<remote path>`). Re-shipping after a crash rewrites
    identical bytes at identical offsets, so resume is idempotent. Casts and the log ship whole lines only.

Seal (manifest.py)
    At session end the owner (or `bastion ship` for a dead owner) truncates torn tails, writes
    manifest.json — files, sizes, SHA-256, event counts, first/last audit seq, status — signed with the audit
    key (Ed25519), and appends a `recording_sealed` audit event carrying the manifest's SHA-256, which ties
    the manifest into the hash chain. Shipping a sealed session ends by reading every file back from the sink
    and comparing SHA-256 with the manifest; the manifest ships last, then `.shipped` is stamped and the
    spool copy is removed after [recording].retention.

When a recording cannot be kept (recorder.py, policy.py): strict refuses or ends, best_effort warns in the
header and audits the gap; see policy.py.
"""

from __future__ import annotations
