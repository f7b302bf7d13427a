"""TOML configuration → typed, validated objects.

Every problem becomes one line naming the key path and the reason, all collected before anything fails, so an
operator fixes them in one pass. The config holds no secrets by construction: passwords, keys and webhook
URLs live in files referenced by path, readable only by the service account; this is what lets the whole
config be hashed and diffed into the audit log.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bastion.canonical import canonical_hash
from bastion.identity.keys import InvalidKey, PublicKey, parse_public_key
from bastion.tomlreader import Errors, Table

DEFAULT_CONFIG_PATH = "/etc/bastion/bastion.toml"
SQL_CLASSES = ("read", "write", "ddl", "dcl", "session", "dangerous", "unknown")
VERDICTS = ("allow", "approve", "block")
PRESETS = ("readonly", "guarded", "open")
CONNECTION_TYPES = ("postgres", "ssh")
RECORDING_FAILURE = ("strict", "best_effort")
OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
MASK_STYLES = ("full", "partial", "pseudonym")


class ConfigError(Exception):
    """The config cannot be used; `problems` holds one 'key.path: reason' line each."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s)")


# ---------------------------------------------------------------- typed config


@dataclass(frozen=True)
class BastionSettings:
    name: str
    state: str
    state_password_file: Path | None
    spool: Path
    command: str | None
    service_user: str
    idle_timeout_s: float


@dataclass(frozen=True)
class AuditSettings:
    log: Path
    signing_key: Path
    checkpoint_every: int


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret_file: Path | None
    scopes: tuple[str, ...]
    algorithms: tuple[str, ...]
    groups_claim: str
    leeway_s: float
    binding_ttl_s: float
    device_authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    jwks_uri: str | None = None


@dataclass(frozen=True)
class User:
    name: str
    keys: tuple[PublicKey, ...]
    groups: tuple[str, ...]
    disabled: bool


@dataclass(frozen=True)
class Role:
    name: str
    groups: tuple[str, ...]  # members of these groups (config or OIDC) hold the role
    connections: tuple[str, ...]  # connections the role may use
    may_request: tuple[str, ...]  # roles or connections the role may ask elevation to
    approves: tuple[str, ...]  # roles or connections whose requests the role may decide ("*" = all)
    auditor: bool
    recording: str | None  # strict | best_effort; None = [recording].failure
    record_input: bool | None


@dataclass(frozen=True)
class Connection:
    name: str
    type: str  # postgres | ssh
    description: str
    policy: str
    host: str
    port: int
    user: str
    # postgres
    database: str | None = None
    password_file: Path | None = None
    sslmode: str = "prefer"
    # ssh
    private_key_file: Path | None = None
    host_key: PublicKey | None = None
    exec_only: bool = False


@dataclass(frozen=True)
class Policy:
    name: str
    preset: str
    statement_timeout_s: float
    classes: dict[str, str] = field(default_factory=dict)  # SQL class -> verdict override
    tables: dict[str, str] = field(default_factory=dict)  # table -> verdict for writes to it
    builtin: bool = False


@dataclass(frozen=True)
class SinkConfig:
    type: str  # dir | sftp
    path: str
    host: str | None = None
    port: int = 22
    user: str | None = None
    private_key_file: Path | None = None
    host_key: PublicKey | None = None


@dataclass(frozen=True)
class RecordingSettings:
    failure: str
    record_input: bool
    free_space_floor: int
    max_lag_s: float
    retention_s: float
    sink: SinkConfig | None


@dataclass(frozen=True)
class ApprovalRule:
    targets: tuple[str, ...]
    min_approvers: int
    pending_ttl_s: float
    max_duration_s: float


@dataclass(frozen=True)
class ApprovalSettings:
    min_approvers: int
    pending_ttl_s: float
    max_duration_s: float
    webhook_url_file: Path | None
    rules: tuple[ApprovalRule, ...]

    def rule_for(self, target: str) -> ApprovalRule:
        """The first rule naming target, else the defaults."""
        for rule in self.rules:
            if target in rule.targets:
                return rule
        return ApprovalRule((target,), self.min_approvers, self.pending_ttl_s, self.max_duration_s)


@dataclass(frozen=True)
class MaskRule:
    """A sensitive column: (schema or None, table or "*", column), how to mask it, and who is exempt."""

    pattern: str
    schema: str | None
    table: str
    column: str
    style: str
    exempt_roles: tuple[str, ...]

    def matches(self, schema: str, table: str, column: str) -> bool:
        return (
            self.column == column
            and (self.table == "*" or self.table == table)
            and (self.schema is None or self.schema == schema)
        )


@dataclass(frozen=True)
class MaskingSettings:
    hmac_key_file: Path | None
    detectors: bool
    default_style: str
    columns: tuple[MaskRule, ...]


@dataclass(frozen=True)
class Config:
    path: Path
    bastion: BastionSettings
    audit: AuditSettings
    oidc: OidcConfig | None
    users: dict[str, User]
    roles: dict[str, Role]
    connections: dict[str, Connection]
    policies: dict[str, Policy]
    recording: RecordingSettings
    approvals: ApprovalSettings
    masking: MaskingSettings
    raw: dict[str, Any]

    @property
    def hash(self) -> str:
        """Canonical SHA-256 of the document: what config-change evidence compares.

        Arrays of named tables are sorted by name first, so moving a [[users]] block is not a change.
        """
        return canonical_hash(normalized(self.raw))

    def user_by_fingerprint(self, fingerprint: str) -> User | None:
        for user in self.users.values():
            if any(key.fingerprint == fingerprint for key in user.keys):
                return user
        return None

    def policy_of(self, connection: Connection) -> Policy:
        return self.policies[connection.policy]


def normalized(value: Any) -> Any:
    """The document with arrays of named tables sorted by name, recursively."""
    if isinstance(value, dict):
        return {key: normalized(item) for key, item in value.items()}
    if isinstance(value, list):
        items = [normalized(item) for item in value]
        if items and all(isinstance(item, dict) and isinstance(item.get("name"), str) for item in items):
            items.sort(key=lambda item: item["name"])
        return items
    return value


def builtin_policies() -> dict[str, Policy]:
    """The presets, usable by name without a [[policies]] entry."""
    return {name: Policy(name=name, preset=name, statement_timeout_s=30.0, builtin=True) for name in PRESETS}


# ---------------------------------------------------------------- secret files


def secret_file_problem(path: Path) -> str | None:
    """Why a secret file cannot be used, or None: it must exist, be a regular file we can read, 0600-ish."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return f"secret file {path} does not exist"
    except OSError as exc:
        return f"secret file {path} cannot be read ({exc.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return f"secret file {path} is not a regular file"
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        return f"secret file {path} is accessible by group or others (mode {mode:04o}); chmod 600 it"
    if not os.access(path, os.R_OK):
        return f"secret file {path} is not readable by this account"
    return None


def read_secret(path: Path) -> str:
    """Read a secret file after re-checking it; the value never appears in an error."""
    problem = secret_file_problem(path)
    if problem:
        raise ConfigError(path, [problem])
    return path.read_text(encoding="utf-8").rstrip("\r\n")


# ---------------------------------------------------------------- loading


def load_config(path: str | Path) -> Config:
    """Parse and validate; raises ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(path, ["config file does not exist"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(path, [f"cannot read config ({reason})"]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"TOML syntax: {exc}"]) from None
    return _Loader(path.resolve(), raw).load()


class _Loader:
    def __init__(self, path: Path, raw: dict[str, Any]) -> None:
        self.path = path
        self.base = path.parent
        self.raw = raw
        self.errors = Errors()

    def file(self, table: Table, key: str, *, secret: bool, required: bool = False) -> Path | None:
        value = table.str(key) if required else table.str(key, None)
        if not value:
            return None
        resolved = self.resolve(value)
        if secret:
            problem = secret_file_problem(resolved)
            if problem:
                self.errors.add(table.key_path(key), problem)
        return resolved

    def resolve(self, value: str) -> Path:
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else (self.base / candidate)

    def public_key(self, table: Table, key: str, *, required: bool) -> PublicKey | None:
        value = table.str(key) if required else table.str(key, None)
        if not value:
            return None
        try:
            return parse_public_key(value)
        except InvalidKey as exc:
            self.errors.add(table.key_path(key), f"not a valid SSH public key: {exc}")
            return None

    def load(self) -> Config:
        top = Table(self.raw, "", self.errors)
        bastion = self.bastion(top.table("bastion", required=True))
        audit = self.audit(top.table("audit"), bastion)
        oidc = self.oidc(top.table("identity"))
        users = self.named(top.tables("users"), "users", self.user, oidc is not None)
        connections = self.named(top.tables("connections"), "connections", self.connection)
        policies = builtin_policies()
        for name, policy in self.named(top.tables("policies"), "policies", self.policy).items():
            if name in PRESETS:
                self.errors.add(f"policies[{name}].name", "this name is a built-in preset; choose another")
            policies[name] = policy
        roles = self.named(top.tables("roles"), "roles", self.role)
        recording = self.recording(top.table("recording"))
        approvals = self.approvals(top.table("approvals"))
        masking = self.masking(top.table("masking"), roles)
        top.done()
        self.cross_check(users, roles, connections, policies, approvals)
        if self.errors:
            raise ConfigError(self.path, self.errors.lines)
        assert bastion is not None and audit is not None  # guaranteed when there are no errors
        return Config(
            path=self.path,
            bastion=bastion,
            audit=audit,
            oidc=oidc,
            users=users,
            roles=roles,
            connections=connections,
            policies=policies,
            recording=recording,
            approvals=approvals,
            masking=masking,
            raw=self.raw,
        )

    def named(self, tables: list[Table], section: str, build: Any, *args: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for table in tables:
            item = build(table, *args)
            table.done()
            if item is None:
                continue
            if item.name in out:
                self.errors.add(f"{table.path}.name", f"duplicate {section} name {item.name!r}")
                continue
            out[item.name] = item
        return out

    # -- sections

    def bastion(self, t: Table | None) -> BastionSettings | None:
        if t is None:
            return None
        name = t.name()
        state = t.str("state", "tinydb:state/state.json")
        state_password_file = self.file(t, "state_password_file", secret=True)
        if isinstance(state, str):
            state = self.check_state_url(t, state)
        spool = self.resolve(t.str("spool", "recordings") or "recordings")
        command = t.str("command", None)
        if command is not None and not os.path.isabs(command):
            self.errors.add(
                t.key_path("command"), "must be an absolute path (sshd runs it as a forced command)"
            )
        service_user = t.str("service_user", "bastion")
        idle = t.duration("idle_timeout", "30m")
        t.done()
        if name is None or state is None:
            return None
        return BastionSettings(name, state, state_password_file, spool, command, service_user, idle or 0.0)

    def check_state_url(self, t: Table, url: str) -> str | None:
        if url.startswith("tinydb:"):
            location = url.removeprefix("tinydb:").removeprefix("//")
            if not location:
                self.errors.add(
                    t.key_path("state"), "tinydb: needs a path, e.g. tinydb:/var/lib/bastion/state.json"
                )
                return None
            return "tinydb:" + str(self.resolve(location))
        parts = urlsplit(url)
        if parts.scheme in ("postgresql", "postgres"):
            if parts.password:
                self.errors.add(
                    t.key_path("state"), "holds a password; put it in bastion.state_password_file instead"
                )
                return None
            return url
        self.errors.add(t.key_path("state"), "must start with tinydb: or postgresql://")
        return None

    def audit(self, t: Table | None, bastion: BastionSettings | None) -> AuditSettings | None:
        spool = bastion.spool if bastion else self.base / "recordings"
        name = bastion.name if bastion else "bastion"
        if t is None:
            t = Table({}, "audit", self.errors)
        log = t.str("log", None)
        signing_key = t.str("signing_key", "keys/audit_ed25519")
        every = t.int("checkpoint_every", 100, minimum=1, maximum=100_000)
        t.done()
        key_path = self.resolve(signing_key or "keys/audit_ed25519")
        if key_path.exists():
            problem = secret_file_problem(key_path)
            if problem:
                self.errors.add(t.key_path("signing_key"), problem)
        log_path = self.resolve(log) if log else spool / "audit" / f"{name}.jsonl"
        return AuditSettings(log_path, key_path, every or 100)

    def oidc(self, identity: Table | None) -> OidcConfig | None:
        if identity is None:
            return None
        t = identity.table("oidc")
        identity.done()
        if t is None:
            return None
        enabled = t.bool("enabled", True)
        issuer = t.str("issuer")
        client_id = t.str("client_id")
        secret = self.file(t, "client_secret_file", secret=True)
        scopes = t.str_list("scopes", ["openid", "profile", "email", "groups"])
        algorithms = t.str_list("algorithms", ["RS256", "ES256"])
        for index, alg in enumerate(algorithms or []):
            if alg not in OIDC_ALGORITHMS:
                self.errors.add(
                    f"{t.key_path('algorithms')}[{index}]",
                    f"{alg!r} is not allowed; use asymmetric algorithms only ({', '.join(OIDC_ALGORITHMS)})",
                )
        if scopes is not None and "openid" not in scopes:
            self.errors.add(t.key_path("scopes"), "must include 'openid'")
        groups_claim = t.str("groups_claim", "groups")
        leeway = t.duration("leeway", "60s")
        binding_ttl = t.duration("binding_ttl", "30d")
        endpoints = {}
        for key in ("issuer", "device_authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = issuer if key == "issuer" else t.str(key, None)
            if isinstance(value, str):
                problem = url_problem(value)
                if problem:
                    self.errors.add(t.key_path(key), problem)
            endpoints[key] = value
        t.done()
        if not enabled or issuer is None or client_id is None:
            return None
        return OidcConfig(
            issuer=issuer,
            client_id=client_id,
            client_secret_file=secret,
            scopes=tuple(scopes or ()),
            algorithms=tuple(algorithms or ()),
            groups_claim=groups_claim or "groups",
            leeway_s=leeway if leeway is not None else 60.0,
            binding_ttl_s=binding_ttl if binding_ttl is not None else 30 * 86400.0,
            device_authorization_endpoint=endpoints["device_authorization_endpoint"],
            token_endpoint=endpoints["token_endpoint"],
            jwks_uri=endpoints["jwks_uri"],
        )

    def user(self, t: Table, oidc_enabled: bool) -> User | None:
        name = t.name()
        keys: list[PublicKey] = []
        for index, line in enumerate(t.str_list("keys", [])):
            try:
                keys.append(parse_public_key(line))
            except InvalidKey as exc:
                self.errors.add(f"{t.key_path('keys')}[{index}]", f"not a valid SSH public key: {exc}")
        if oidc_enabled and t.has("groups"):
            self.errors.add(
                t.key_path("groups"), "groups come from OIDC when identity.oidc is enabled; remove it"
            )
        groups = t.str_list("groups", [])
        disabled = t.bool("disabled", False)
        if name is None:
            return None
        return User(name, tuple(keys), tuple(groups or ()), bool(disabled))

    def role(self, t: Table) -> Role | None:
        name = t.name()
        role = Role(
            name=name or "",
            groups=tuple(t.str_list("groups", []) or ()),
            connections=tuple(t.str_list("connections", []) or ()),
            may_request=tuple(t.str_list("may_request", []) or ()),
            approves=tuple(t.str_list("approves", []) or ()),
            auditor=bool(t.bool("auditor", False)),
            recording=t.str("recording", None, choices=RECORDING_FAILURE),
            record_input=t.bool("record_input", None),
        )
        return role if name else None

    def connection(self, t: Table) -> Connection | None:
        name = t.name()
        kind = t.str("type", choices=CONNECTION_TYPES)
        description = t.str("description", "")
        policy = t.str("policy")
        host = t.str("host")
        if isinstance(host, str) and not host.strip():
            self.errors.add(t.key_path("host"), "must not be empty")
        if kind == "postgres":
            port = t.int("port", 5432, minimum=1, maximum=65535)
            user = t.str("user")
            database = t.str("database")
            password_file = self.file(t, "password_file", secret=True)
            sslmode = t.str("sslmode", "prefer", choices=SSLMODES)
            t.done()
            if None in (name, policy, host, port, user, database):
                return None
            return Connection(
                name, "postgres", description or "", policy, host, port, user,
                database=database, password_file=password_file, sslmode=sslmode or "prefer",
            )  # fmt: skip
        if kind == "ssh":
            port = t.int("port", 22, minimum=1, maximum=65535)
            user = t.str("user")
            private_key_file = self.file(t, "private_key_file", secret=True, required=True)
            host_key = self.public_key(t, "host_key", required=True)
            exec_only = t.bool("exec_only", False)
            t.done()
            if None in (name, policy, host, port, user, private_key_file, host_key):
                return None
            return Connection(
                name, "ssh", description or "", policy, host, port, user,
                private_key_file=private_key_file, host_key=host_key, exec_only=bool(exec_only),
            )  # fmt: skip
        # Unknown or missing type: the keys cannot be judged, so only the type error is reported.
        t._read.update(t.data)
        return None

    def policy(self, t: Table) -> Policy | None:
        name = t.name()
        preset = t.str("preset", choices=PRESETS)
        timeout = t.duration("statement_timeout", "30s")
        classes = self.verdict_map(t, "classes", SQL_CLASSES)
        if classes.get("unknown") == "allow":
            self.errors.add(
                f"{t.key_path('classes')}.unknown",
                "statements the parser does not understand cannot be allowed",
            )
        if classes.get("dangerous") == "allow":
            self.errors.add(
                f"{t.key_path('classes')}.dangerous",
                "dangerous statements (server files, programs, other databases) need approval at least",
            )
        if classes.get("session", "block") != "block":
            self.errors.add(
                f"{t.key_path('classes')}.session",
                "session control stays blocked: it would undo read-only, the timeout and the search_path "
                "that masking resolves names against",
            )
        tables = self.verdict_map(t, "tables", None)
        if name is None or preset is None:
            return None
        return Policy(name, preset, timeout or 30.0, classes, tables)

    def masking(self, t: Table | None, roles: dict[str, Role]) -> MaskingSettings:
        if t is None:
            t = Table({}, "masking", self.errors)
        key = self.file(t, "hmac_key_file", secret=True)
        detectors = t.bool("detectors", True)
        default_style = t.str("default_style", "full", choices=MASK_STYLES) or "full"
        rules = []
        for ct in t.tables("columns"):
            pattern = ct.str("column")
            style = ct.str("style", default_style, choices=MASK_STYLES) or default_style
            exempt = ct.str_list("exempt_roles", []) or []
            for index, role in enumerate(exempt):
                if role not in roles:
                    self.errors.add(f"{ct.key_path('exempt_roles')}[{index}]", f"unknown role {role!r}")
            ct.done()
            if not isinstance(pattern, str):
                continue
            parts = [part.strip() for part in pattern.split(".")]
            if (
                len(parts) not in (2, 3)
                or not all(parts)
                or "*" in parts[-1]
                or (len(parts) == 3 and "*" in parts[0])
            ):
                self.errors.add(
                    ct.key_path("column"), "must be table.column, schema.table.column or *.column"
                )
                continue
            schema = parts[0] if len(parts) == 3 else None
            rules.append(MaskRule(pattern, schema, parts[-2], parts[-1], style, tuple(exempt)))
        t.done()
        if rules and key is None:
            self.errors.add(
                "masking.hmac_key_file",
                "required when columns are masked: masking records keep an HMAC of each original value",
            )
        return MaskingSettings(key, bool(detectors), default_style, tuple(rules))

    def verdict_map(self, t: Table, key: str, allowed_keys: tuple[str, ...] | None) -> dict[str, str]:
        out = {}
        for item, verdict in t.mapping(key).items():
            path = f"{t.key_path(key)}.{item}"
            if allowed_keys is not None and item not in allowed_keys:
                self.errors.add(path, f"unknown statement class; known: {', '.join(allowed_keys)}")
            elif not isinstance(verdict, str) or verdict not in VERDICTS:
                self.errors.add(path, f"must be one of {', '.join(VERDICTS)}")
            else:
                out[item] = verdict
        return out

    def recording(self, t: Table | None) -> RecordingSettings:
        if t is None:
            t = Table({}, "recording", self.errors)
        failure = t.str("failure", "strict", choices=RECORDING_FAILURE)
        record_input = t.bool("input", False)
        floor = t.size("free_space_floor", "1GiB")
        max_lag = t.duration("max_lag", "5m")
        retention = t.duration("retention", "0s")
        sink = self.sink(t.table("sink"))
        t.done()
        return RecordingSettings(
            failure or "strict", bool(record_input), floor or 0, max_lag or 0.0, retention or 0.0, sink
        )

    def sink(self, t: Table | None) -> SinkConfig | None:
        if t is None:
            return None
        kind = t.str("type", choices=("dir", "sftp"))
        if kind == "dir":
            path = t.str("path")
            t.done()
            return SinkConfig("dir", str(self.resolve(path))) if path else None
        if kind == "sftp":
            host = t.str("host")
            port = t.int("port", 22, minimum=1, maximum=65535)
            user = t.str("user")
            path = t.str("path", ".")
            key = self.file(t, "private_key_file", secret=True, required=True)
            host_key = self.public_key(t, "host_key", required=True)
            t.done()
            if None in (host, user, key, host_key):
                return None
            return SinkConfig("sftp", path or ".", host, port or 22, user, key, host_key)
        t._read.update(t.data)
        return None

    def approvals(self, t: Table | None) -> ApprovalSettings:
        if t is None:
            t = Table({}, "approvals", self.errors)
        min_approvers = t.int("min_approvers", 1, minimum=1, maximum=10) or 1
        pending_ttl = t.duration("pending_ttl", "1h") or 3600.0
        max_duration = t.duration("max_duration", "8h") or 8 * 3600.0
        webhook = self.file(t, "webhook_url_file", secret=True)
        rules = []
        for rt in t.tables("rules"):
            targets = rt.str_list("targets")
            rule = ApprovalRule(
                targets=tuple(targets or ()),
                min_approvers=rt.int("min_approvers", min_approvers, minimum=1, maximum=10) or min_approvers,
                pending_ttl_s=rt.duration("pending_ttl", pending_ttl) or pending_ttl,
                max_duration_s=rt.duration("max_duration", max_duration) or max_duration,
            )
            rt.done()
            rules.append(rule)
        t.done()
        return ApprovalSettings(min_approvers, pending_ttl, max_duration, webhook, tuple(rules))

    # -- references between sections

    def cross_check(
        self,
        users: dict[str, User],
        roles: dict[str, Role],
        connections: dict[str, Connection],
        policies: dict[str, Policy],
        approvals: ApprovalSettings,
    ) -> None:
        for name in set(roles) & set(connections):
            self.errors.add(
                f"roles[{name}].name",
                "a role and a connection share this name; elevation targets would be ambiguous",
            )
        targets = set(roles) | set(connections)
        seen_keys: dict[str, str] = {}
        for user in users.values():
            for index, key in enumerate(user.keys):
                owner = seen_keys.setdefault(key.fingerprint, user.name)
                if owner != user.name:
                    self.errors.add(
                        f"users[{user.name}].keys[{index}]",
                        f"key {key.fingerprint} is already registered to user {owner!r}",
                    )
        for conn in connections.values():
            if conn.policy not in policies:
                self.errors.add(f"connections[{conn.name}].policy", f"unknown policy {conn.policy!r}")
        for role in roles.values():
            for index, name in enumerate(role.connections):
                if name not in connections:
                    self.errors.add(
                        f"roles[{role.name}].connections[{index}]", f"unknown connection {name!r}"
                    )
            for index, name in enumerate(role.may_request):
                if name not in targets:
                    self.errors.add(
                        f"roles[{role.name}].may_request[{index}]", f"unknown role or connection {name!r}"
                    )
            for index, name in enumerate(role.approves):
                if name != "*" and name not in targets:
                    self.errors.add(
                        f"roles[{role.name}].approves[{index}]", f"unknown role or connection {name!r}"
                    )
        for index, rule in enumerate(approvals.rules):
            for t_index, name in enumerate(rule.targets):
                if name not in targets:
                    path = f"approvals.rules[{index}].targets[{t_index}]"
                    self.errors.add(path, f"unknown role or connection {name!r}")


def url_problem(url: str) -> str | None:
    """OIDC endpoints must be https; plain http is allowed only on loopback (tests, local demos)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an https:// URL"
    if parts.username or parts.password:
        return "must not carry credentials"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return "must use https (plain http only on loopback)"
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
