"""The SQL data path: statement → policy → durable verdict event → target → masking → screen, with evidence.

One `SqlPipeline` per open connection of a session; the TUI's SQL pane and headless `exec` both use it, so
there is exactly one enforcement point. Access is re-checked on every statement (grants are checked when
used). A script stops at the first statement that is not allowed or fails: later statements were written
assuming the earlier ones ran.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any

from bastion.config import ConfigError, Connection, MaskRule
from bastion.identity.roles import Access, access
from bastion.policy.classes import Classification, SqlClass
from bastion.policy.masking import (
    BatchEvidence,
    ColumnDecision,
    Masker,
    MaskKeys,
    decide_columns,
    matching_rules,
    redact_error,
    split_table,
)
from bastion.policy.verdict import Decision, Verdict, decide, may_write
from bastion.session import Session
from bastion.targets.catalog import Catalog, TableInfo, load_catalog
from bastion.targets.postgres import PostgresTarget, ResultColumn, StatementRun, TargetError

if TYPE_CHECKING:
    from bastion.approvals import Approvals
    from bastion.policy import lineage as lineage_mod


def _parser() -> ModuleType:
    """The SQL parser and classifier (sqlglot), loaded at the first statement, not at login: a session
    that never runs SQL never pays its memory."""
    from bastion.policy import sql

    return sql


def _lineage() -> ModuleType:
    from bastion.policy import lineage

    return lineage


def _bare_projections(tree: Any, count: int) -> list[bool]:
    """Per result column: the outermost SELECT names a column as it is (alias allowed, `*` too) rather than
    an expression of it. Anything else, or a list that cannot be lined up with the result, is False."""
    from sqlglot import exp

    node = tree
    while isinstance(node, exp.Subquery):
        node = node.this
    if not isinstance(node, exp.Select):
        return [False] * count
    flags: list[bool | None] = []  # None: a star, whose width the result decides
    for projection in node.expressions:
        inner = projection.this if isinstance(projection, exp.Alias) else projection
        if isinstance(inner, exp.Star) or (
            isinstance(inner, exp.Column) and isinstance(inner.this, exp.Star)
        ):
            flags.append(None)
        else:
            flags.append(isinstance(inner, exp.Column) and isinstance(inner.this, exp.Identifier))
    stars = flags.count(None)
    if stars == 0:
        return [bool(f) for f in flags] if len(flags) == count else [False] * count
    if stars == 1 and count >= len(flags) - 1:
        width = count - (len(flags) - 1)
        return [b for f in flags for b in ([True] * width if f is None else [bool(f)])]
    return [True] * count if all(f is not False for f in flags) else [False] * count


CATALOG_TTL_S = 10.0
FIRST_ROWS = 1000


class PipelineError(Exception):
    """The pipeline cannot be used (no access, cannot connect); one line for the user."""


@dataclass
class StatementResult:
    """One statement's outcome. Rows beyond the first batch come from `more()`; `close()` ends it."""

    index: int
    text: str
    decision: Decision
    status: str  # ok | blocked | needs_approval | error | cancelled
    verdict_seq: int
    columns: list[str] = field(default_factory=list)
    type_names: list[str] = field(default_factory=list)
    masking: list[ColumnDecision] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rowcount: int = -1
    duration_s: float = 0.0
    error: str | None = None
    command_status: str = ""
    outcome_seq: int | None = None
    _handle: _Running | None = None

    @property
    def more_available(self) -> bool:
        return self._handle is not None and self._handle.run.streaming

    def more(self, limit: int = FIRST_ROWS) -> list[tuple[Any, ...]]:
        """The next masked rows of a streaming result; [] at the end (which also writes the outcome)."""
        if self._handle is None:
            return []
        rows = self._handle.fetch(limit)
        if not self._handle.run.streaming:
            self.close()
        return rows

    def close(self) -> None:
        """Stop streaming (cancels the rest on the server) and write the outcome event once."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            handle.finish()

    @property
    def masked_columns(self) -> list[str]:
        return [d.name for d in self.masking if d.masked]


class _Running:
    """A statement whose rows are still streaming."""

    def __init__(
        self, pipeline: SqlPipeline, result: StatementResult, run: StatementRun, masker: Masker
    ) -> None:
        self.pipeline = pipeline
        self.result = result
        self.run = run
        self.masker = masker
        self.started = time.perf_counter()
        self.first_evidence: BatchEvidence | None = None

    def fetch(self, limit: int) -> list[tuple[Any, ...]]:
        try:
            rows = self.run.next_batch(limit)
        except TargetError as exc:
            self.result.status = "cancelled" if exc.sqlstate == "57014" else "error"
            self.result.error = self.pipeline.error_text(exc, self.result)
            return []
        masked, evidence = self.masker.apply(rows)
        self.pipeline.record_masked_values(self.result, evidence)
        return masked

    def finish(self) -> None:
        self.run.close()
        self.result.rowcount = self.masker.totals.rows if self.run.columns is not None else self.run.rowcount
        self.result.command_status = self.run.status
        self.result.duration_s = time.perf_counter() - self.started
        self.pipeline.record_outcome(self.result, self.masker, self.first_evidence)


class SqlPipeline:
    """One session's use of one PostgreSQL connection."""

    def __init__(self, session: Session, connection_name: str) -> None:
        self.session = session
        self.name = connection_name
        self.config = session.config
        conn = self.config.connections.get(connection_name)
        if conn is None or conn.type != "postgres":
            raise PipelineError(f"{connection_name} is not a PostgreSQL connection")
        self.connection: Connection = conn
        try:
            self.keys = MaskKeys.from_settings(self.config.masking)
        except (ConfigError, OSError, ValueError):
            reason = f"{connection_name}: the masking key cannot be read"
            session.event("sql_connect_failed", {"connection": connection_name, "error": reason})
            raise PipelineError(reason) from None
        self.target: PostgresTarget | None = None
        self.catalog: Catalog | None = None
        self._catalog_at = 0.0
        self._running: StatementResult | None = None
        self._lineage_cache: dict[
            tuple[tuple[tuple[str, str], ...], int], list[lineage_mod.OutputColumn]
        ] = {}

    # -- lifecycle

    def _access(self) -> Access:
        result = access(
            self.config, self.session.store, self.session.user.name, self.name, groups=self.session.groups
        )
        if not result.allowed or result.policy is None:
            raise PipelineError(result.reason)
        return result

    def open(self) -> None:
        allowed = self._access()
        policy = allowed.policy
        self.target = PostgresTarget(
            self.connection,
            user=self.session.user.name,
            session_id=self.session.id,
            statement_timeout_s=policy.statement_timeout_s,
            read_only=not may_write(policy),
        )
        try:
            self.target.connect()
        except TargetError as exc:
            # connect() words its failures itself: a fixed phrase, no host, port, role or database
            self.target = None
            self.session.event("sql_connect_failed", {"connection": self.name, "error": str(exc)})
            raise PipelineError(str(exc)) from None
        try:
            self._refresh_catalog(force=True)
        except Exception as exc:
            reason = self._failure_reason(exc, f"cannot read the schema of {self.name}")
            self.target.close()
            self.target = None
            self.session.event(
                "sql_connect_failed", {"connection": self.name, "error": reason, "type": type(exc).__name__}
            )
            raise PipelineError(reason) from None
        self.session.event(
            "sql_connect",
            {
                "connection": self.name,
                "policy": policy.name,
                "read_only": self.target.read_only,
                "via": list(allowed.via),
            },
        )

    def close(self) -> None:
        if self._running is not None:
            self._running.close()
        if self.target is not None:
            self.target.close()
            self.session.event("sql_disconnect", {"connection": self.name}, durable=False)
            self.target = None

    def cancel(self) -> None:
        """Cancel the running statement on the server (from any thread)."""
        if self.target is not None:
            self.target.cancel()

    def _failure_reason(self, exc: BaseException, otherwise: str) -> str:
        """One line for a failure outside a statement's own server error. Driver texts name the host,
        port, role and database, and a secret file's problem names its path: none of them is shown."""
        if self.target is None or self.target.lost:
            return f"lost the connection to {self.name}; open it again"
        if isinstance(exc, ConfigError | OSError):
            return f"{self.name}: a secret file cannot be read"
        return otherwise

    def _failed(self, exc: BaseException, result: StatementResult | None = None) -> PipelineError:
        """Audit a failure on the running path (with the statement's outcome when its verdict is on
        record), drop a connection that broke, and give the user one clean line."""
        reason = self._failure_reason(exc, f"{self.name}: internal error ({type(exc).__name__})")
        if result is not None:
            result.status, result.error = "error", reason
            self.record_outcome(result, None)
        self.session.event(
            "sql_failed", {"connection": self.name, "error": reason, "type": type(exc).__name__}
        )
        if self.target is not None and self.target.lost:
            self.target.close()
            self.target = None
            self.session.event("sql_disconnect", {"connection": self.name, "lost": True}, durable=False)
        return PipelineError(reason)

    def _refresh_catalog(self, *, force: bool = False) -> Catalog:
        assert self.target is not None
        if force or self.catalog is None or time.monotonic() - self._catalog_at > CATALOG_TTL_S:
            self.catalog = load_catalog(self.target.conn)
            self._catalog_at = time.monotonic()
        return self.catalog

    # -- policy only

    def check(self, sql: str) -> list[Decision]:
        policy = self._access().policy
        parser = _parser()
        return [decide(policy, parser.classify(text)) for text in parser.split_statements(sql)]

    # -- running

    def run(self, sql: str, *, first_rows: int = FIRST_ROWS) -> Iterator[StatementResult]:
        """Decide, record and run each statement in turn; stop after the first that does not succeed."""
        if self.target is None:
            raise PipelineError(f"{self.name} is not open")
        if self._running is not None:
            self._running.close()
            self._running = None
        for index, text in enumerate(_parser().split_statements(sql)):
            try:
                result = self._run_one(index, text, first_rows)
            except PipelineError:
                raise
            except Exception as exc:
                raise self._failed(exc) from None
            yield result
            if result.status != "ok":
                break

    def _run_one(self, index: int, text: str, first_rows: int) -> StatementResult:
        try:
            allowed = self._access()
            policy = allowed.policy
            assert policy is not None
        except PipelineError as exc:
            decision = Decision(Verdict.BLOCK, (str(exc),), (), _parser().classify(text), "none")
            seq = self._verdict_event(index, decision)
            return StatementResult(index, text, decision, "blocked", seq, error=str(exc))
        classification = self._with_catalog_findings(_parser().classify(text))
        decision = decide(policy, classification)
        grant = None
        if decision.verdict is Verdict.NEEDS_APPROVAL:
            # An approved request for exactly this statement lets it run, once: the grant is consumed
            # atomically before the verdict is recorded, so two runs cannot both use it.
            grant = self.approvals().use_statement_grant(self.session.user.name, self.name, text)
            if grant is not None:
                decision = replace(
                    decision,
                    verdict=Verdict.ALLOW,
                    reasons=(
                        f"approved: request {grant.request_id}, grant {grant.id} (single use)",
                        *decision.reasons,
                    ),
                )
        verdict_seq = self._verdict_event(index, decision, grant_id=grant.id if grant else None)
        if decision.verdict is not Verdict.ALLOW:
            status = "needs_approval" if decision.verdict is Verdict.NEEDS_APPROVAL else "blocked"
            result = StatementResult(index, text, decision, status, verdict_seq)
            self.record_outcome(result, None)
            return result
        return self._execute(index, text, decision, verdict_seq, first_rows, allowed.roles)

    def _with_catalog_findings(self, classification: Classification) -> Classification:
        """What only the schema shows: `t.f` on a table without a column f is the call f(t)."""
        if classification.tree is None or self.catalog is None:
            return classification
        from bastion.policy.catalog_checks import function_call_notation
        from bastion.policy.classes import SEVERITY

        found = list(function_call_notation(classification.tree, self._refresh_catalog()))
        if not found:
            return classification
        classes = set(classification.classes) | {cls for cls, _, _ in found}
        return replace(
            classification,
            classes=frozenset(classes),
            sql_class=max(classes, key=SEVERITY.__getitem__),
            reasons=(*(reason for _, reason, _ in found), *classification.reasons),
            opaque_functions=classification.opaque_functions | {name for _, _, name in found},
        )

    def approvals(self) -> Approvals:
        """Requests and grants for this session's user (the approvals module loads with its first use)."""
        from bastion.approvals import Approvals

        return Approvals(self.config, self.session.store, self._approval_event)

    def _approval_event(self, type: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.session.event(type, payload)

    def _verdict_event(self, index: int, decision: Decision, *, grant_id: str | None = None) -> int:
        c = decision.classification
        extra = {"grant": grant_id} if grant_id else {}
        event = self.session.event(
            "sql_statement",
            {
                **extra,
                "connection": self.name,
                "index": index,
                "statement": c.text,
                "sha256": hashlib.sha256(c.text.encode("utf-8")).hexdigest(),
                "class": c.sql_class.value,
                "classes": sorted(cls.value for cls in c.classes),
                "verdict": decision.verdict.value,
                "policy": decision.policy,
                "reasons": list(decision.reasons),
                "warnings": list(decision.warnings),
            },
        )
        return int(event["seq"])

    def _execute(
        self,
        index: int,
        text: str,
        decision: Decision,
        verdict_seq: int,
        first_rows: int,
        roles: tuple[str, ...],
    ) -> StatementResult:
        assert self.target is not None
        result = StatementResult(index, text, decision, "ok", verdict_seq)
        classification = decision.classification
        started = time.perf_counter()
        try:
            catalog = self._refresh_catalog()
            run = self.target.stream(text)
        except Exception as exc:
            raise self._failed(exc, result) from None
        try:
            if classification.returns_rows:
                run.start_stream()
                rows = run.next_batch(first_rows)
            else:
                run.execute()
                rows = run.fetch_executed(first_rows)
        except TargetError as exc:
            run.close()
            result.duration_s = time.perf_counter() - started
            if self.target.lost:
                raise self._failed(exc, result) from None
            result.status = "cancelled" if exc.sqlstate == "57014" else "error"
            result.error = self.error_text(exc, result)
            self.record_outcome(result, None)
            return result
        if SqlClass.DDL in classification.classes:
            try:
                self._refresh_catalog(force=True)
            except Exception as exc:
                run.close()
                raise self._failed(exc, result) from None
        try:
            columns = run.columns or []
            result.columns = [c.name for c in columns]
            result.type_names = [c.type_name for c in columns]
            result.masking = self.plan_masking(classification, columns, catalog, roles)
            masker = Masker(result.masking, self.keys, detectors_on=self.config.masking.detectors)
            result.rows, evidence = masker.apply(rows)
            handle = _Running(self, result, run, masker)
            handle.started = started
            result._handle = handle
            if run.streaming:
                # Rows go on screen before the statement ends: their masking evidence is written first.
                self.record_masking(result, evidence)
                self._running = result
            else:
                handle.first_evidence = evidence  # one outcome event carries it all
                result.close()
        except Exception as exc:
            # The statement ran (an UPDATE … RETURNING may have written): free the connection, show
            # nothing, and record the outcome of what ran.
            result.rows = []
            run.close()
            result.duration_s = time.perf_counter() - started
            raise self._failed(exc, result) from None
        return result

    # -- masking

    def _origin(self, catalog: Catalog, column: ResultColumn) -> list[tuple[str, str, str]]:
        """(schema, table, column) names the server reports, with partition/inheritance ancestors."""
        if not column.table_oid:
            return []
        info = catalog.by_oid(column.table_oid)
        if info is None:
            return []
        name = next((c.name for c in info.columns if c.attnum == column.table_column), None)
        if name is None:
            return []
        return [(t.schema, t.name, name) for t in [info, *catalog.ancestors(info)]]

    @staticmethod
    def _table_origin(catalog: Catalog, column: ResultColumn) -> bool:
        """The server reports a stored table column; a view's or matview's column may be any expression."""
        info = catalog.by_oid(column.table_oid) if column.table_oid else None
        return info is not None and not info.is_view and column.table_column > 0

    def plan_masking(
        self,
        classification: Classification,
        columns: list[ResultColumn],
        catalog: Catalog,
        roles: tuple[str, ...],
    ) -> list[ColumnDecision]:
        """Masking decisions for a result. Lineage is only needed when the statement reads sensitive data:
        otherwise no column can derive from a sensitive one, and the server's origin report still applies."""
        rules = self.config.masking.columns
        explained = classification.kind in {"EXPLAIN", "SHOW"}
        reads_sensitive = not explained and self.reads_sensitive(classification, catalog, rules)
        lineage: list[frozenset[tuple[str, str]] | None] | None = None
        lineage_reason = ""
        if explained:
            lineage = [frozenset() for _ in columns]
        elif reads_sensitive and classification.tree is not None:
            outputs = self._lineage(classification, catalog)
            lineage = [out.sources for out in outputs]
            lineage_reason = "; ".join(r for out in outputs for r in out.reasons if out.sources is None)[:200]
        decisions = decide_columns(
            [c.name for c in columns],
            origins=[self._origin(catalog, c) for c in columns],
            lineage=lineage,
            reads_sensitive=reads_sensitive,
            rules=rules,
            roles=roles,
            type_oids=[c.type_oid for c in columns],
            lineage_reason=lineage_reason,
            type_modifiers=[c.type_modifier for c in columns],
            bare=[
                bare and self._table_origin(catalog, column)
                for bare, column in zip(
                    _bare_projections(classification.tree, len(columns)), columns, strict=True
                )
            ],
        )
        if reads_sensitive and lineage is not None and classification.tree is not None:
            self._mask_obfuscated(classification, catalog, rules, decisions, lineage)
        return decisions

    def _mask_obfuscated(
        self,
        classification: Classification,
        catalog: Catalog,
        rules: tuple[MaskRule, ...],
        decisions: list[ColumnDecision],
        lineage: list[frozenset[tuple[str, str]] | None],
    ) -> None:
        """Encoded, hashed, reversed or cut text from a table with sensitive columns is masked: the value
        detectors are the wall for its unlisted columns (free text, JSON), and they cannot read base64."""
        from bastion.policy.catalog_checks import uses_obfuscation

        if not uses_obfuscation(classification.tree):
            return
        for decision, sources in zip(decisions, lineage, strict=False):
            if decision.masked or not sources:
                continue
            for table, _column in sources:
                info = catalog.resolve(table)
                if info is not None and self._relation_sensitive(info, catalog, rules):
                    decision.masked, decision.style = True, "full"
                    decision.reasons.append(
                        f"encoded or cut data from {table}, which holds sensitive columns"
                    )
                    break

    def _lineage(self, classification: Classification, catalog: Catalog) -> list[lineage_mod.OutputColumn]:
        """Lineage, cached by the statement's shape: literals never change where a value comes from."""
        key = (_parser().structure_key(classification.text), catalog.token)
        cached = self._lineage_cache.get(key)
        if cached is None:
            assert classification.tree is not None
            cached = _lineage().result_lineage(classification.tree, catalog, sql=classification.text)
            if len(self._lineage_cache) >= 1024:
                self._lineage_cache.pop(next(iter(self._lineage_cache)))
            self._lineage_cache[key] = cached
        return cached

    def reads_sensitive(
        self, classification: Classification, catalog: Catalog, rules: tuple[MaskRule, ...]
    ) -> bool:
        """Whether the statement reads a relation holding (or, for views, exposing) sensitive columns,
        reads something the catalog does not know, or calls functions whose reads cannot be seen."""
        if classification.opaque_functions:
            return True
        tree = classification.tree
        if tree is None:
            return True
        from sqlglot import exp

        from bastion.policy.catalog_checks import exposes_data

        ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
        for table in tree.find_all(exp.Table):
            if not isinstance(table.this, exp.Identifier):
                continue  # table functions: their arguments are walked by lineage
            parts = [
                p for p in (table.args.get("catalog"), table.args.get("db"), table.this) if p is not None
            ]
            if len(parts) == 1 and table.name.lower() in ctes:
                continue
            info = catalog.resolve(parts)
            if info is None:
                if catalog.is_system(parts) and not exposes_data(catalog, parts):
                    continue
                return True  # unknown, or a system view that samples every table's data (pg_stats)
            if self._relation_sensitive(info, catalog, rules):
                return True
        return False

    def _relation_sensitive(self, info: TableInfo, catalog: Catalog, rules: tuple[MaskRule, ...]) -> bool:
        key = ("sensitive", info.oid, id(rules))
        if key in catalog.memo:
            return bool(catalog.memo[key])
        names = [info, *catalog.ancestors(info)]
        sensitive = any(matching_rules(rules, t.schema, t.name, c) for t in names for c in info.column_names)
        if not sensitive and info.is_view:
            try:
                from sqlglot import exp

                query = exp.select("*").from_(exp.table_(info.name, db=info.schema, quoted=True))
                outputs = _lineage().result_lineage(query, catalog)
                for out in outputs:
                    if out.sources is None:
                        sensitive = True
                        break
                    for table, column in out.sources:
                        schema, bare = split_table(table)
                        if matching_rules(rules, schema, bare, column):
                            sensitive = True
            except Exception:
                sensitive = True
        catalog.memo[key] = sensitive
        return sensitive

    # -- evidence

    def error_text(self, exc: TargetError, result: StatementResult) -> str:
        """What the user sees of a server error. Detectors run over it; when the statement reads sensitive
        data the DETAIL is dropped and values the message echoes are cut (`ssn::int` would otherwise print
        the SSN in "invalid input syntax")."""
        from bastion.policy.catalog_checks import elide_values

        message = str(exc)
        if not self._error_touches_sensitive(result):
            return redact_error(f"{message} — {exc.detail}" if exc.detail else message)
        return redact_error(elide_values(message, exc.sqlstate, result.text))

    def _error_touches_sensitive(self, result: StatementResult) -> bool:
        if self.catalog is None:
            return True
        return self.reads_sensitive(result.decision.classification, self.catalog, self.config.masking.columns)

    def record_masking(self, result: StatementResult, evidence: BatchEvidence) -> None:
        """Masking decisions and the first batch's evidence, before a streaming result reaches the screen."""
        payload = {
            "connection": self.name,
            "verdict_seq": result.verdict_seq,
            **self._masking_payload(result),
        }
        payload.update(self._evidence_payload(result, evidence))
        if len(payload) > 2:
            # Masking is a decision: on disk before the masked rows reach the screen (DESIGN: nothing lost).
            # Later batches' evidence rides on the next durable append.
            self.session.event("sql_masking", payload, durable="masking" in payload)

    def record_masked_values(self, result: StatementResult, evidence: BatchEvidence) -> None:
        payload = self._evidence_payload(result, evidence)
        if payload:
            payload["verdict_seq"] = result.verdict_seq
            self.session.event("sql_masked_values", payload, durable=False)

    @staticmethod
    def _masking_payload(result: StatementResult) -> dict[str, Any]:
        decisions = [d.summary() for d in result.masking if d.masked or d.exempt_by]
        return {"masking": decisions} if decisions else {}

    @staticmethod
    def _evidence_payload(result: StatementResult, evidence: BatchEvidence | None) -> dict[str, Any]:
        """Per masked column the rows affected and the HMAC of each distinct original; detector hits."""
        payload: dict[str, Any] = {}
        if evidence is None:
            return payload
        if evidence.masked_values:
            payload["masked"] = [
                {"column": result.columns[i], "index": i, "rows": evidence.masked_counts.get(i, 0),
                 "hmac_sha256_128_b64": hmacs, "hmac_note": "base64 of 16 bytes per distinct original value"}
                for i, hmacs in evidence.masked_values.items()
            ]  # fmt: skip
        if evidence.detector_hits:
            payload["detected"] = [
                {"column": result.columns[i], "index": i, "kinds": hits,
                 "hmac_sha256_128": evidence.detector_hmacs.get(i, [])}
                for i, hits in evidence.detector_hits.items()
            ]  # fmt: skip
        if payload:
            payload["batch_rows"] = evidence.rows
        return payload

    def record_outcome(
        self, result: StatementResult, masker: Masker | None, evidence: BatchEvidence | None = None
    ) -> None:
        """The statement's outcome (after it ran); for a result that ended in its first batch it also
        carries the masking decisions and evidence, so a small query costs two events in all."""
        if result.outcome_seq is not None:
            return
        payload: dict[str, Any] = {
            "connection": self.name,
            "verdict_seq": result.verdict_seq,
            "status": result.status,
            "duration_ms": round(result.duration_s * 1000, 3),
            "rows": result.rowcount,
        }
        if result.error:
            payload["error"] = result.error
        if result.command_status:
            payload["command"] = result.command_status
        if evidence is not None:
            payload.update(self._masking_payload(result))
            payload.update(self._evidence_payload(result, evidence))
        if masker is not None and masker.totals.masked_counts:
            payload["masked_columns"] = [
                {"column": result.columns[i], "rows": n} for i, n in masker.totals.masked_counts.items()
            ]
        if masker is not None and masker.totals.detector_hits:
            payload["detected_total"] = [
                {"column": result.columns[i], "kinds": hits}
                for i, hits in masker.totals.detector_hits.items()
            ]
        event = self.session.event("sql_outcome", payload, durable=False)
        result.outcome_seq = int(event["seq"])
        if self._running is result:
            self._running = None
        # recording: the SQL transcript channel cast (bastion/recording/channel.py), once per outcome
        if self.session.transcript is not None:
            self.session.transcript(self, result)
