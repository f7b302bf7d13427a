"""A SQL pane: editor, verdict and status, results table, schema browser — over one SqlPipeline.

All database work runs in a thread worker (one at a time per pane) and comes back as messages, so the UI
never waits on the network. Cancel asks the server to stop the running statement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable, Static, TextArea, Tree
from textual.worker import get_current_worker

from bastion.config import MaskRule
from bastion.policy.masking import matching_rules
from bastion.session import Session
from tui.safe import cell, clean, text

if TYPE_CHECKING:  # the pipeline (psycopg) loads when the first pane opens, not with the landing screen
    from bastion.sql_pipeline import SqlPipeline, StatementResult

FIRST_ROWS = 1000
MORE_ROWS = 1000
# A pane keeps at most this many rows: paging through a huge result must not fill the session's memory
# (`ssh bastion exec --json` streams any size).
MAX_SHOWN_ROWS = 50_000


@dataclass
class History:
    """Statements run in this pane, newest last; browsing starts past the end."""

    items: list[str] = field(default_factory=list)
    position: int = 0

    def add(self, statement: str) -> None:
        if statement and (not self.items or self.items[-1] != statement):
            self.items.append(statement)
        self.position = len(self.items)

    def step(self, delta: int) -> str | None:
        if not self.items:
            return None
        self.position = max(0, min(len(self.items), self.position + delta))
        return self.items[self.position] if self.position < len(self.items) else ""


class SqlPane(Vertical):
    """One open PostgreSQL connection."""

    BINDINGS: ClassVar = [
        Binding(
            "f5", "run", "Run", priority=True
        ),  # first: the footer shows it; ctrl+enter is often just enter
        Binding("ctrl+enter", "run", "Run", show=False, priority=True),
        Binding("ctrl+r", "run", "Run", show=False, priority=True),
        Binding("escape", "cancel", "Cancel", priority=True),
        Binding("ctrl+c", "cancel", "Cancel", show=False, priority=True),
        Binding("f6", "more", "More rows", priority=True),
        Binding("f2", "toggle_schema", "Schema", priority=True),
        Binding("f9", "approval", "Request/run approved", priority=True),
        Binding("alt+up", "history(-1)", "Previous", show=False),
        Binding("alt+down", "history(1)", "Next", show=False),
    ]

    running: reactive[bool] = reactive(False)

    class Opened(Message):
        def __init__(self, pane: SqlPane) -> None:
            super().__init__()
            self.pane = pane

    class OpenFailed(Message):
        def __init__(self, pane: SqlPane, reason: str) -> None:
            super().__init__()
            self.pane = pane
            self.reason = reason

    class Finished(Message):
        """One statement's result (first batch included)."""

        def __init__(self, result: StatementResult) -> None:
            super().__init__()
            self.result = result

    class MoreRows(Message):
        def __init__(self, result: StatementResult, rows: list[tuple[Any, ...]]) -> None:
            super().__init__()
            self.result = result
            self.rows = rows

    class RunEnded(Message):
        pass

    def __init__(
        self, session: Session, connection: str, *, show_timings: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.session = session
        self.connection = connection
        self.show_timings = show_timings
        self.pipeline: SqlPipeline | None = None
        self.current: StatementResult | None = None
        self.history = History()
        self.shown_rows = 0
        self.request_id: str | None = None  # the approval request filed from this pane, if any
        self.request_state = ""
        self.approved_statement = ""

    # -- layout

    def compose(self) -> ComposeResult:
        with Horizontal(classes="sql-body"):
            tree: Tree[str] = Tree("schema", classes="schema", id="schema")
            tree.display = False
            yield tree
            with Vertical(classes="sql-main"):
                editor = TextArea.code_editor("", language="sql", classes="editor", id="editor")
                editor.show_line_numbers = True
                yield editor
                yield Static(Text("Connecting…", style="dim"), classes="verdict", id="verdict")
                table: DataTable[Text] = DataTable(classes="results", id="results", zebra_stripes=True)
                yield table
                yield Static(Text(""), classes="status", id="status")

    def on_mount(self) -> None:
        self.query_one("#editor", TextArea).focus()
        self.open_pipeline()

    # -- opening and closing

    @work(thread=True, exclusive=True, group="db")
    def open_pipeline(self) -> None:
        from bastion.sql_pipeline import PipelineError, SqlPipeline

        pipeline = SqlPipeline(self.session, self.connection)
        try:
            pipeline.open()
        except PipelineError as exc:
            self.post_message(self.OpenFailed(self, str(exc)))
            return
        self.pipeline = pipeline
        self.post_message(self.Opened(self))

    def on_sql_pane_opened(self, event: Opened) -> None:
        policy = self.session.config.connections[self.connection].policy
        self.set_verdict(
            Text(f"Connected to {self.connection} · policy {policy} · F5 or Ctrl+Enter runs", "dim")
        )
        self.fill_schema()

    def on_sql_pane_open_failed(self, event: OpenFailed) -> None:
        self.set_verdict(Text.assemble(("Cannot open: ", "bold red"), text(event.reason, single_line=True)))

    def close_pipeline(self) -> None:
        """Close the target session (blocking: called from the app's closing worker)."""
        if self.pipeline is not None:
            self.pipeline.cancel()
            self.pipeline.close()
            self.pipeline = None

    # -- schema browser

    def fill_schema(self) -> None:
        pipeline = self.pipeline
        if pipeline is None or pipeline.catalog is None:
            return
        rules = self.session.config.masking.columns
        tree = self.query_one("#schema", Tree)
        tree.clear()
        tree.root.expand()
        for table in sorted(pipeline.catalog.tables, key=lambda t: (t.schema, t.name)):
            label = Text.assemble(
                text(f"{table.schema}.{table.name}", "bold"), (" view" if table.is_view else "", "dim")
            )
            node = tree.root.add(label, data=table.qualified)
            for column in table.columns:
                node.add_leaf(
                    self._column_label(rules, table.schema, table.name, column.name, column.type_name)
                )

    @staticmethod
    def _column_label(
        rules: tuple[MaskRule, ...], schema: str, table: str, column: str, type_name: str
    ) -> Text:
        hits = matching_rules(rules, schema, table, column)
        label = Text.assemble(text(column), (f" {clean(type_name)}", "dim"))
        if hits:
            label.append(f"  ● sensitive ({hits[0].style})", style="bold magenta")
        return label

    def action_toggle_schema(self) -> None:
        tree = self.query_one("#schema", Tree)
        tree.display = not tree.display

    # -- running

    def selected_statement(self) -> str:
        editor = self.query_one("#editor", TextArea)
        if editor.selected_text.strip():
            return editor.selected_text.strip()
        from bastion.policy.sql import statement_at  # the parser loads with the first statement

        row, column = editor.cursor_location
        lines = editor.text.split("\n")
        offset = sum(len(line) + 1 for line in lines[:row]) + column
        return statement_at(editor.text, offset)

    def action_run(self) -> None:
        if self.pipeline is None:
            self.notify("Not connected yet.", severity="warning")
            return
        if self.running:
            self.notify("A statement is running: Esc cancels it.", severity="warning")
            return
        statement = self.selected_statement()
        if not statement:
            self.notify("Nothing to run: write a statement in the editor.", severity="warning")
            return
        self.history.add(statement)
        self.running = True
        self.set_verdict(Text("Running…", "dim"))
        self.run_statements(statement)

    @work(thread=True, exclusive=True, group="db")
    def run_statements(self, sql: str) -> None:
        from bastion.sql_pipeline import PipelineError

        pipeline = self.pipeline
        assert pipeline is not None
        worker = get_current_worker()
        try:
            for result in pipeline.run(sql, first_rows=FIRST_ROWS):
                if worker.is_cancelled:
                    result.close()
                    break
                self.post_message(self.Finished(result))
        except PipelineError as exc:
            self.post_message(self.OpenFailed(self, str(exc)))
        finally:
            self.post_message(self.RunEnded())

    def on_sql_pane_run_ended(self, _event: RunEnded) -> None:
        self.running = False

    def action_cancel(self) -> None:
        if self.running and self.pipeline is not None:
            self.pipeline.cancel()
            self.notify("Cancel sent to the server.")
            return
        editor = self.query_one("#editor", TextArea)
        if editor.has_focus and not self.running:
            self.query_one("#results", DataTable).focus()  # nothing to cancel: Esc leaves the editor

    def on_sql_pane_finished(self, event: Finished) -> None:
        result = event.result
        if self.current is not None and self.current is not result:
            self.close_result(self.current)
        self.current = result
        self.show_verdict(result)
        if result.status == "ok" and result.columns:
            self.show_rows(result)
        elif result.status == "ok":
            self.query_one("#results", DataTable).clear(columns=True)
        self.show_status(result)

    def close_result(self, result: StatementResult) -> None:
        if result.more_available:
            self.close_in_worker(result)

    @work(thread=True, group="db")
    def close_in_worker(self, result: StatementResult) -> None:
        result.close()

    def show_verdict(self, result: StatementResult) -> None:
        decision = result.decision
        if result.status == "blocked":
            head = Text("BLOCKED ", style="bold white on red")
        elif result.status == "needs_approval":
            head = Text("NEEDS APPROVAL ", style="bold black on yellow")
        elif result.status in ("error", "cancelled"):
            head = Text(f"{result.status.upper()} ", style="bold white on dark_red")
        else:
            head = Text("ALLOWED ", style="bold black on green")
        line = Text.assemble(head, " ", text(decision.classification.sql_class.value, "bold"), " · ")
        reasons = decision.reasons if result.status != "ok" else decision.reasons[:1]
        line.append_text(text("; ".join(reasons), single_line=True))
        for warning in decision.warnings:
            line.append_text(Text.assemble("\n⚠ ", text(warning, "yellow", single_line=True)))
        if result.status == "needs_approval":
            line.append("\nF9 requests approval; once approved it runs exactly this text, once.")
        if result.error:
            line.append_text(Text.assemble("\n", text(result.error, "red", single_line=True)))
        self.set_verdict(line)

    def set_verdict(self, content: Text) -> None:
        self.query_one("#verdict", Static).update(content)

    def show_rows(self, result: StatementResult) -> None:
        table = self.query_one("#results", DataTable)
        table.clear(columns=True)
        masked = {d.index: d for d in result.masking if d.masked}
        for index, name in enumerate(result.columns):
            label = text(name, "bold", single_line=True)
            if index in masked:
                label.append(" 🔒", style="magenta")
            table.add_column(label, key=str(index))
        table.add_rows([[cell(v) for v in row] for row in result.rows])
        self.shown_rows = len(result.rows)

    def show_status(self, result: StatementResult) -> None:
        parts: list[Text] = []
        if result.status == "ok":
            if result.columns:
                more = f" of >{self.shown_rows:,}" if result.more_available else ""
                parts.append(Text(f"{self.shown_rows:,}{more} rows", "bold"))
                if result.more_available and self.shown_rows < MAX_SHOWN_ROWS:
                    parts.append(Text("F6 loads more", "dim"))
                elif result.more_available:
                    parts.append(Text(f"pane limit of {MAX_SHOWN_ROWS:,} rows reached", "yellow"))
            else:
                parts.append(text(result.command_status or "done", "bold"))
            if self.show_timings:
                parts.append(Text(f"{result.duration_s * 1000:.1f} ms", "dim"))
        masked = [d for d in result.masking if d.masked]
        if masked:
            names = ", ".join(
                f"{clean(d.name)} ({d.style}: {clean(d.reasons[0]) if d.reasons else 'masked'})"
                for d in masked
            )
            parts.append(Text(f"masked: {names}", "magenta"))
        exempt = [d for d in result.masking if not d.masked and d.exempt_by]
        if exempt:
            parts.append(Text("shown by exemption: " + ", ".join(clean(d.name) for d in exempt), "yellow"))
        status = Text(" · ").join(parts) if parts else Text("")
        self.query_one("#status", Static).update(status)

    # -- more rows on demand

    def action_more(self) -> None:
        result = self.current
        if result is None or not result.more_available:
            self.notify("No more rows.")
            return
        if self.running:
            return
        if self.shown_rows >= MAX_SHOWN_ROWS:
            self.notify(
                f"A pane keeps {MAX_SHOWN_ROWS:,} rows at most: narrow the query, or stream it with "
                "`ssh bastion exec --json`.",
                severity="warning",
            )
            return
        self.running = True
        self.fetch_more(result)

    @work(thread=True, exclusive=True, group="db")
    def fetch_more(self, result: StatementResult) -> None:
        try:
            rows = result.more(MORE_ROWS)
            self.post_message(self.MoreRows(result, rows))
        finally:
            self.post_message(self.RunEnded())

    def on_sql_pane_more_rows(self, event: MoreRows) -> None:
        if event.result is not self.current:
            return
        self.query_one("#results", DataTable).add_rows([[cell(v) for v in row] for row in event.rows])
        self.shown_rows += len(event.rows)
        self.show_status(event.result)
        if event.result.error:
            self.show_verdict(event.result)

    @on(DataTable.RowHighlighted, "#results")
    def near_the_end(self, event: DataTable.RowHighlighted) -> None:
        table = event.data_table
        if (
            self.current is not None
            and self.current.more_available
            and event.cursor_row >= table.row_count - 1
        ):
            self.action_more()

    # -- approvals: a statement that needs approval is requested from here and, once approved, run from
    # here — exactly the approved text, once (the grant is consumed by the pipeline).

    def action_approval(self) -> None:
        if self.request_id is not None and self.request_state == "approved":
            self.run_approved()
            return
        result = self.current
        if result is None or result.status != "needs_approval":
            self.notify("F9 requests approval for a statement that needs it.", severity="warning")
            return
        if self.request_id is not None and self.request_state == "pending":
            self.notify(f"Request {self.request_id} is still pending.")
            return
        from tui.screens.forms import ReasonScreen

        statement = result.text
        self.app.push_screen(
            ReasonScreen(f"Request approval on {self.connection}", statement),
            lambda reason: self.file_request(statement, reason) if reason is not None else None,
        )

    @work(thread=True, group="requests")
    def file_request(self, statement: str, reason: str) -> None:
        from bastion.approvals import ApprovalError, for_session
        from bastion.notify import notify_request

        approvals = for_session(self.session)
        try:
            request = approvals.request_statement(self.session.user.name, self.connection, statement, reason)
        except ApprovalError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        notify_request(self.session, "request", request)
        self.post_message(
            self.RequestState(request.id, request.state, request.statement or "", [], filed=True)
        )

    class RequestState(Message):
        def __init__(
            self,
            request_id: str,
            state: str,
            statement: str,
            decisions: list[dict[str, Any]],
            *,
            filed: bool = False,
        ) -> None:
            super().__init__()
            self.filed = filed  # a new request this pane now follows; else a poll of the one it follows
            self.request_id = request_id
            self.state = state
            self.statement = statement
            self.decisions = decisions

    def on_sql_pane_request_state(self, event: RequestState) -> None:
        if not event.filed and event.request_id != self.request_id:
            return  # a poll that lost the race with running the approved statement: no longer followed
        self.request_id, self.request_state = event.request_id, event.state
        self.approved_statement = event.statement
        by = ", ".join(f"{d['approver']}: {d['decision']}" for d in event.decisions)
        line = Text.assemble(("REQUEST ", "bold black on cyan"), text(event.request_id), f" {event.state}")
        if by:
            line.append_text(Text.assemble(" (", text(by), ")"))
        if event.state == "approved":
            line.append(" — F9 runs the approved statement now, once", style="bold green")
        elif event.state == "pending":
            line.append(" — waiting for an approver; this updates by itself", style="dim")
        self.set_verdict(line)

    def on_store_changed(self, _event: Message) -> None:
        if self.request_id is not None and self.request_state in ("pending", "approved"):
            self.poll_request(self.request_id)

    @work(thread=True, exclusive=True, group="request-poll")
    def poll_request(self, request_id: str) -> None:
        request = self.session.store.get_request(request_id)
        if request is not None:
            self.post_message(
                self.RequestState(request.id, request.state, request.statement or "", request.decisions)
            )

    def run_approved(self) -> None:
        statement = self.approved_statement
        if not statement or self.running or self.pipeline is None:
            return
        self.request_id, self.request_state = None, ""
        self.history.add(statement)
        self.running = True
        self.set_verdict(Text("Running the approved statement…", "dim"))
        self.run_statements(statement)

    # -- history

    def action_history(self, delta: int) -> None:
        statement = self.history.step(delta)
        if statement is not None:
            self.query_one("#editor", TextArea).text = statement
