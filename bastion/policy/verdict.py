"""From a classified statement and a connection's policy to a verdict: allow, needs_approval or block.

Every class found in a statement gets the policy's verdict for it and the strictest one wins, so a write
hidden in a CTE is judged as a write even inside a SELECT. Presets follow the design: session control is
blocked everywhere (it could undo the read-only wall, the timeout, or the search_path masking relies on),
and unknown or dangerous statements are never allowed by a preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bastion.config import Policy
from bastion.policy.classes import Classification, SqlClass


class Verdict(StrEnum):
    ALLOW = "allow"
    NEEDS_APPROVAL = "needs_approval"
    BLOCK = "block"


_RANK = {Verdict.ALLOW: 0, Verdict.NEEDS_APPROVAL: 1, Verdict.BLOCK: 2}
_FROM_CONFIG = {"allow": Verdict.ALLOW, "approve": Verdict.NEEDS_APPROVAL, "block": Verdict.BLOCK}

A, N, B = Verdict.ALLOW, Verdict.NEEDS_APPROVAL, Verdict.BLOCK
PRESETS: dict[str, dict[SqlClass, Verdict]] = {
    "readonly": {SqlClass.READ: A, SqlClass.WRITE: B, SqlClass.DDL: B, SqlClass.DCL: B,
                 SqlClass.SESSION: B, SqlClass.DANGEROUS: B, SqlClass.UNKNOWN: B},
    "guarded": {SqlClass.READ: A, SqlClass.WRITE: N, SqlClass.DDL: N, SqlClass.DCL: B,
                SqlClass.SESSION: B, SqlClass.DANGEROUS: B, SqlClass.UNKNOWN: B},
    "open": {SqlClass.READ: A, SqlClass.WRITE: A, SqlClass.DDL: A, SqlClass.DCL: A,
             SqlClass.SESSION: B, SqlClass.DANGEROUS: B, SqlClass.UNKNOWN: B},
}  # fmt: skip


@dataclass(frozen=True)
class Decision:
    """The verdict on one statement, with the reasons a user and an approver read."""

    verdict: Verdict
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]
    classification: Classification
    policy: str

    @property
    def runs(self) -> bool:
        return self.verdict is Verdict.ALLOW


def _table_key(name: str) -> str:
    return name if "." in name else f"public.{name}"


def may_write(policy: Policy) -> bool:
    """False when no statement that writes can ever be allowed: the connection may then be read-only."""
    verdicts = {**PRESETS[policy.preset], **{SqlClass(k): _FROM_CONFIG[v] for k, v in policy.classes.items()}}
    if any(verdicts[cls] is not Verdict.BLOCK for cls in SqlClass if cls is not SqlClass.READ):
        return True
    return any(v != "block" for v in policy.tables.values())


def _strictest(verdicts: list[Verdict]) -> Verdict:
    return max(verdicts, key=_RANK.__getitem__)


def decide(policy: Policy, classification: Classification) -> Decision:
    """The strictest verdict over every class in the statement, with per-table overrides for writes.

    A table rule decides a write when it covers every table written; when it covers only some, it can
    only make the verdict stricter.
    """
    rules = PRESETS[policy.preset]
    tables = {_table_key(name): _FROM_CONFIG[v] for name, v in policy.tables.items()}
    written = sorted(_table_key(t) for t in classification.tables_written)
    verdict, reasons = Verdict.ALLOW, []
    for cls in sorted(classification.classes, key=lambda c: c.value):
        override = policy.classes.get(cls.value)
        cls_verdict = _FROM_CONFIG[override] if override else rules[cls]
        source = f"policy {policy.name}" if override else f"the {policy.preset} preset"
        subject = cls.value
        if cls is SqlClass.WRITE and written:
            covered = [tables[t] for t in written if t in tables]
            if len(covered) == len(written):
                cls_verdict, source, subject = (
                    _strictest(covered),
                    f"policy {policy.name}",
                    "write to " + ", ".join(written),
                )
            elif covered:
                cls_verdict = _strictest([cls_verdict, *covered])
        verdict = _strictest([verdict, cls_verdict])
        if cls_verdict is not Verdict.ALLOW:
            reasons.append(f"{subject} {_WORDS[cls_verdict]} under {source}")
    if verdict is Verdict.ALLOW:
        return Decision(verdict, classification.reasons, classification.warnings, classification, policy.name)
    return Decision(
        verdict, tuple(reasons) + classification.reasons, classification.warnings, classification, policy.name
    )


_WORDS = {Verdict.ALLOW: "is allowed", Verdict.NEEDS_APPROVAL: "needs approval", Verdict.BLOCK: "is blocked"}
