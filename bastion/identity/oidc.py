"""OIDC device login (RFC 8628) and ID token validation.

A bastion login has no browser, so the user approves the login on another device. That makes the
device code phishable: an attacker can start a login and send the code to a victim. The defence is
what the user sees: ``format_prompt`` names the bastion and the SSH key fingerprint, so a victim who
did not start this login can tell.

Everything that comes back from the identity provider is hostile input: discovery documents, JWKS,
device authorization responses and ID tokens are size-capped, type-checked and validated, and every
failure is an ``OidcError`` with a one-line message that never contains a token, a device code, a
user code or the client secret.

Decisions:

* Transport: https only, except plain http on loopback (127.0.0.0/8, ::1, localhost) for local
  providers and tests. Decided here from the URL, never from the environment (authlib's
  ``AUTHLIB_INSECURE_TRANSPORT`` is not consulted). Redirects are not followed: a redirect could
  downgrade to http or leave the provider.
* Algorithms: only asymmetric signature algorithms may be configured. ``none`` and HS* are refused
  at construction (HS* with a public JWKS is the classic key-confusion hole).
* Key choice: a token's ``kid`` selects the key. An unknown ``kid`` makes us refetch the JWKS once
  (key rotation) and then fail. A token without ``kid`` is accepted only when exactly one JWKS key
  fits its algorithm; with several candidates we refuse rather than try each one.
* ``azp``: when ``aud`` holds several audiences, ``azp`` must be present and equal the client_id;
  when ``azp`` is present at all it must equal the client_id.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8628 import DEVICE_CODE_GRANT_TYPE
from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import JWKRegistry, Key, RSAKey

__all__ = [
    "DeviceLogin",
    "DevicePrompt",
    "OidcClient",
    "OidcError",
    "OidcIdentity",
    "OidcSettings",
    "format_prompt",
]

#: Signature algorithms that may be configured, mapped to the JWK key type they need.
_ASYMMETRIC_ALGS: dict[str, str] = {
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
    "EdDSA": "OKP",
    "Ed25519": "OKP",
}
_MIN_RSA_BITS = 2048
_MAX_DOCUMENT_BYTES = 1024 * 1024  # discovery, JWKS, device responses
_MAX_ID_TOKEN_CHARS = 64 * 1024
_MAX_DEVICE_LIFETIME_S = 3600  # never poll longer than this, whatever the provider says
_DEFAULT_INTERVAL_S = 5  # RFC 8628 section 3.2
_SLOW_DOWN_STEP_S = 5  # RFC 8628 section 3.5
_LOOPBACK_NAMES = frozenset({"localhost"})
_EXPIRED = "device code expired before the login was approved; start the login again"


class OidcError(Exception):
    """An OIDC login or token validation failure, with a one-line message safe to show users."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


def _one_line(text: str, limit: int = 300) -> str:
    """Printable single line: provider text can carry terminal escapes and newlines."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _safe_code(value: object) -> str:
    """An OAuth error code or JOSE header value, restricted so it can be echoed without risk."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return "unrecognised"
    if all(ch.isascii() and (ch.isalnum() or ch in "_-.") for ch in value):
        return value
    return "unrecognised"


def _is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(url: object, what: str) -> str:
    """Refuse anything but https, or http on loopback; secure by default, not by environment."""
    if not isinstance(url, str) or not url:
        raise OidcError(f"{what} is missing or not a string")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise OidcError(f"{what} is not a valid URL") from exc
    if not host:
        raise OidcError(f"{what} has no host")
    if parts.username is not None or parts.password is not None:
        raise OidcError(f"{what} must not carry credentials")
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and _is_loopback_host(host):
        return url
    raise OidcError(f"{what} must use https (plain http is allowed only on loopback): {_one_line(url, 120)}")


@dataclass(frozen=True)
class OidcSettings:
    """Validated OIDC client configuration. Construction fails on anything insecure."""

    issuer: str
    client_id: str
    #: Read by the caller from a secret file; None for a public client.
    client_secret: str | None = field(default=None, repr=False)
    #: "groups" is asked for because several providers (Dex, Okta) only release the claim when asked;
    #: set scopes explicitly for providers that reject unknown scopes.
    scopes: list[str] = field(default_factory=lambda: ["openid", "profile", "email", "groups"])
    algorithms: list[str] = field(default_factory=lambda: ["RS256", "ES256"])
    groups_claim: str = "groups"
    leeway_s: int = 60
    http_timeout_s: float = 10
    device_authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    jwks_uri: str | None = None

    def __post_init__(self) -> None:
        _check_url(self.issuer, "OIDC issuer")
        parts = urlsplit(self.issuer)
        if parts.query or parts.fragment:
            raise OidcError("OIDC issuer must not have a query or fragment")
        if not isinstance(self.client_id, str) or not self.client_id.strip():
            raise OidcError("OIDC client_id must be a non-empty string")
        if self.client_secret is not None and (
            not isinstance(self.client_secret, str) or not self.client_secret
        ):
            raise OidcError("OIDC client_secret must be a non-empty string or absent")
        if not self.scopes or not all(isinstance(s, str) and s and " " not in s for s in self.scopes):
            raise OidcError("OIDC scopes must be a non-empty list of single words")
        if "openid" not in self.scopes:
            raise OidcError("OIDC scopes must include 'openid', or no ID token is issued")
        if not self.algorithms:
            raise OidcError("OIDC algorithms must not be empty")
        for alg in self.algorithms:
            if not isinstance(alg, str):
                raise OidcError("OIDC algorithms must be strings")
            if alg.lower() == "none":
                raise OidcError("OIDC algorithm 'none' is refused: unsigned ID tokens prove nothing")
            if alg.upper().startswith("HS"):
                raise OidcError(
                    f"OIDC algorithm {_safe_code(alg)!r} is refused: "
                    "symmetric algorithms invite key confusion"
                )
            if alg not in _ASYMMETRIC_ALGS:
                raise OidcError(
                    f"OIDC algorithm {_safe_code(alg)!r} is not supported; use one of "
                    + ", ".join(sorted(_ASYMMETRIC_ALGS))
                )
        if not isinstance(self.groups_claim, str) or not self.groups_claim:
            raise OidcError("OIDC groups_claim must be a non-empty string")
        if (
            isinstance(self.leeway_s, bool)
            or not isinstance(self.leeway_s, int)
            or not 0 <= self.leeway_s <= 600
        ):
            raise OidcError("OIDC leeway_s must be an integer between 0 and 600")
        if isinstance(self.http_timeout_s, bool) or not isinstance(self.http_timeout_s, (int, float)):
            raise OidcError("OIDC http_timeout_s must be a number")
        if not 0 < self.http_timeout_s <= 120:
            raise OidcError("OIDC http_timeout_s must be between 0 and 120 seconds")
        for name in ("device_authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = getattr(self, name)
            if value is not None:
                _check_url(value, f"OIDC {name}")

    @property
    def discovery_url(self) -> str:
        """OpenID Connect Discovery 1.0 section 4: strip one trailing slash, append the well-known path."""
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


@dataclass(frozen=True)
class DevicePrompt:
    """What the user needs to approve the login elsewhere. Provider-supplied, already sanitised."""

    verification_uri: str
    verification_uri_complete: str | None
    user_code: str
    expires_in: int
    interval: int


@dataclass(frozen=True)
class OidcIdentity:
    """The validated outcome of a login: who, from which issuer, in which groups, until when."""

    issuer: str
    subject: str
    claims: dict[str, Any]
    groups: list[str]
    expires_at: float


def format_prompt(prompt: DevicePrompt, *, bastion_name: str, key_fingerprint: str) -> str:
    """The text users see. It names the bastion and the SSH key so a phished victim can notice."""
    name = _one_line(bastion_name, 80)
    fingerprint = _one_line(key_fingerprint, 120)
    minutes = max(1, round(prompt.expires_in / 60))
    lines = [
        f'Log in to bastion "{name}" with your identity provider.',
        "",
        f"  1. Open   {prompt.verification_uri}",
        f"  2. Enter  {prompt.user_code}",
    ]
    if prompt.verification_uri_complete:
        lines.append(f"     (or open {prompt.verification_uri_complete})")
    lines += [
        "",
        f'This approves an SSH login to bastion "{name}" with key {fingerprint}.',
        "Continue only if you started this login yourself, just now, with that key.",
        "If someone sent you this code, do not enter it: that is device-code phishing.",
        f"The code expires in about {minutes} minute{'s' if minutes != 1 else ''}.",
    ]
    return "\n".join(lines)


def _groups_from(claims: Mapping[str, Any], claim: str) -> list[str]:
    """Groups from a claim that may be a list, a single string, or garbage; never raises."""
    value = claims.get(claim)
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list):
        items = value
    else:
        return []
    seen: dict[str, None] = {}
    for item in items:
        if isinstance(item, str) and item:
            seen.setdefault(item, None)
    return list(seen)


class OidcClient:
    """Discovery, JWKS cache and ID token validation for one configured provider.

    Usable on its own (``validate_id_token``) and the base of ``DeviceLogin``. Caches live in the
    instance: one bastion login is one process, so a per-instance cache is the right lifetime.
    """

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._session = OAuth2Session(
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            token_endpoint_auth_method="client_secret_basic" if settings.client_secret else "none",
        )
        self._session.register_client_auth_method(("client_secret_basic", _encode_client_secret_basic))
        self._discovery: dict[str, Any] | None = None
        self._jwks: list[tuple[str | None, Key]] | None = None

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._session.close()

    def __enter__(self) -> OidcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ---------------------------------------------------------------------------------

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        """GET a JSON object, size-capped, no redirects; errors name the document, not its content."""
        try:
            resp = self._session.get(
                url,
                withhold_token=True,
                timeout=self.settings.http_timeout_s,
                allow_redirects=False,
                stream=True,
                headers={"Accept": "application/json"},
            )
            try:
                if resp.status_code != 200:
                    raise OidcError(f"could not fetch the {what}: HTTP {resp.status_code}")
                body = _read_capped(resp)
            finally:
                resp.close()
        except requests.RequestException as exc:
            raise OidcError(
                f"could not reach the identity provider for the {what} ({type(exc).__name__})"
            ) from exc
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise OidcError(f"the {what} is not valid JSON") from exc
        if not isinstance(doc, dict):
            raise OidcError(f"the {what} is not a JSON object")
        return doc

    # -- discovery -----------------------------------------------------------------------------

    def _discover(self) -> dict[str, Any]:
        if self._discovery is None:
            doc = self._get_json(self.settings.discovery_url, "OIDC discovery document")
            issuer = doc.get("issuer")
            if issuer != self.settings.issuer:
                shown = _one_line(issuer, 120) if isinstance(issuer, str) else "nothing"
                raise OidcError(
                    f"OIDC discovery issuer mismatch: configured {self.settings.issuer}, "
                    f"provider says {shown}"
                )
            self._discovery = doc
        return self._discovery

    def endpoint(self, name: str) -> str:
        """An endpoint URL: explicit in settings, else from discovery; always transport-checked."""
        explicit = getattr(self.settings, name, None)
        if explicit:
            return explicit
        doc = self._discover()
        if name not in doc:
            raise OidcError(f"the identity provider does not advertise a {name}")
        return _check_url(doc[name], f"discovered {name}")

    # -- JWKS ----------------------------------------------------------------------------------

    def _fetch_jwks(self) -> list[tuple[str | None, Key]]:
        doc = self._get_json(self.endpoint("jwks_uri"), "JWKS")
        entries = doc.get("keys")
        if not isinstance(entries, list):
            raise OidcError("the JWKS has no 'keys' list")
        keys: list[tuple[str | None, Key]] = []
        for entry in entries[:100]:
            if not isinstance(entry, dict):
                continue
            kid = entry.get("kid")
            if kid is not None and not isinstance(kid, str):
                continue
            try:
                key = JWKRegistry.import_key(entry)
            except (JoseError, ValueError, TypeError):
                continue  # RFC 7517 section 5: ignore keys we do not understand
            if key.key_type == "oct":
                continue  # a symmetric key has no business in a public JWKS
            if isinstance(key, RSAKey) and key.raw_value.key_size < _MIN_RSA_BITS:
                continue
            keys.append((kid, key))
        self._jwks = keys
        return keys

    def _candidates(self, keys: list[tuple[str | None, Key]], alg: str) -> list[tuple[str | None, Key]]:
        """Keys that may verify ``alg``: matching key type, signing use, and no conflicting alg."""
        kty = _ASYMMETRIC_ALGS[alg]
        out = []
        for kid, key in keys:
            if key.key_type != kty:
                continue
            if key.get("use") not in (None, "sig"):
                continue
            if key.get("alg") not in (None, alg):
                continue
            out.append((kid, key))
        return out

    def _pick_key(self, keys: list[tuple[str | None, Key]], alg: str, kid: str | None) -> Key | None:
        candidates = self._candidates(keys, alg)
        if kid is not None:
            matching = [key for key_kid, key in candidates if key_kid == kid]
        else:
            matching = [key for _, key in candidates]
        if len(matching) > 1:
            if kid is None:
                raise OidcError(
                    f"ID token has no kid and the JWKS has {len(matching)} {alg} keys; refusing to guess"
                )
            raise OidcError(f"the JWKS has several {alg} keys with the same kid; refusing to guess")
        return matching[0] if matching else None

    def _signing_key(self, alg: str, kid: str | None) -> Key:
        """The key for this token; refetches the JWKS once when the key is not cached (rotation)."""
        if self._jwks is not None:
            key = self._pick_key(self._jwks, alg, kid)
            if key is not None:
                return key
        key = self._pick_key(self._fetch_jwks(), alg, kid)
        if key is not None:
            return key
        if kid is None:
            raise OidcError(f"ID token has no kid and the JWKS has no {alg} key")
        raise OidcError(f"ID token signing key {_safe_code(kid)!r} is not in the provider's JWKS")

    # -- ID token ------------------------------------------------------------------------------

    def validate_id_token(self, token: str, *, now: float | None = None) -> dict[str, Any]:
        """Verify signature (configured algorithms only), issuer, audience/azp and times; return claims."""
        settings = self.settings
        if not isinstance(token, str) or not token or len(token) > _MAX_ID_TOKEN_CHARS:
            raise OidcError("ID token is missing or too large")
        if token.count(".") != 2:
            raise OidcError("ID token is not a signed JWT (encrypted or malformed tokens are not accepted)")
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError) as exc:
            raise OidcError("ID token is malformed") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in settings.algorithms:
            raise OidcError(
                f"ID token algorithm {_safe_code(alg)!r} is not allowed "
                f"(allowed: {', '.join(settings.algorithms)})"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise OidcError("ID token kid is not a string")
        key = self._signing_key(alg, kid)
        try:
            claims = jwt.decode(token, key, algorithms=[alg]).claims
        except BadSignatureError as exc:
            raise OidcError("ID token signature is invalid") from exc
        except JoseError as exc:
            raise OidcError(f"ID token is invalid ({type(exc).__name__})") from exc

        current = time.time() if now is None else now
        registry = jwt.JWTClaimsRegistry(
            now=int(current),
            leeway=settings.leeway_s,
            iss={"essential": True, "value": settings.issuer},
            sub={"essential": True},
            aud={"essential": True, "value": settings.client_id},
            exp={"essential": True},
            iat={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError as exc:
            raise OidcError("ID token has expired") from exc
        except MissingClaimError as exc:
            missing = ", ".join(_safe_code(name) for name in exc.claim.split(","))
            raise OidcError(f"ID token lacks required claim(s): {missing}") from exc
        except ClaimError as exc:
            raise OidcError(_claim_message(exc.claim, settings)) from exc

        aud = claims["aud"]
        azp = claims.get("azp")
        if isinstance(aud, list) and len(aud) > 1 and azp is None:
            raise OidcError("ID token has several audiences but no azp; refusing it")
        if azp is not None and azp != settings.client_id:
            raise OidcError("ID token azp is not this client")
        return claims


def _claim_message(claim: str, settings: OidcSettings) -> str:
    messages = {
        "iss": f"ID token issuer does not match the configured issuer {settings.issuer}",
        "aud": f"ID token audience does not include this client ({_one_line(settings.client_id, 80)})",
        "sub": "ID token subject is empty or not a string",
        "exp": "ID token expiry is not a valid time",
        "iat": "ID token was issued in the future (check the clocks)",
        "nbf": "ID token is not valid yet (check the clocks)",
    }
    return messages.get(claim, f"ID token claim {_safe_code(claim)!r} is invalid")


def _encode_client_secret_basic(
    client: Any, method: str, uri: str, headers: dict[str, str], body: str
) -> tuple[str, dict[str, str], str]:
    """HTTP Basic client auth as RFC 6749 section 2.3.1 says: form-urlencode id and secret first.

    authlib's client sends them raw, which breaks secrets with "%", "+" or ":" at compliant servers.
    """
    user = quote(client.client_id, safe="")
    password = quote(client.client_secret or "", safe="")
    headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return uri, headers, body


def _read_capped(resp: requests.Response) -> bytes:
    """Read at most _MAX_DOCUMENT_BYTES; a provider (or a proxy) must not exhaust memory."""
    chunks: list[bytes] = []
    total = 0
    for chunk in resp.iter_content(64 * 1024):
        total += len(chunk)
        if total > _MAX_DOCUMENT_BYTES:
            raise OidcError("identity provider response is too large")
        chunks.append(chunk)
    return b"".join(chunks)


class DeviceLogin(OidcClient):
    """RFC 8628 device authorization grant, ending in a validated ``OidcIdentity``."""

    def run(
        self,
        show: Callable[[DevicePrompt], None],
        *,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
    ) -> OidcIdentity:
        """Ask for a device code, show it, poll until approved, validate the ID token."""
        device_code, prompt = self._request_device_code()
        deadline = now() + prompt.expires_in
        show(prompt)
        interval = prompt.interval
        token_endpoint = self.endpoint("token_endpoint")
        while True:
            sleep(interval)
            if now() >= deadline:
                raise OidcError(_EXPIRED)
            outcome = self._poll(token_endpoint, device_code)
            if outcome == "authorization_pending":
                continue
            if outcome == "slow_down":
                interval += _SLOW_DOWN_STEP_S
                continue
            if isinstance(outcome, dict):
                break
        id_token = outcome.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("the identity provider returned no ID token (is the 'openid' scope allowed?)")
        claims = self.validate_id_token(id_token, now=now())
        return OidcIdentity(
            issuer=claims["iss"],
            subject=claims["sub"],
            claims=claims,
            groups=_groups_from(claims, self.settings.groups_claim),
            expires_at=float(claims["exp"]),
        )

    def _request_device_code(self) -> tuple[str, DevicePrompt]:
        url = self.endpoint("device_authorization_endpoint")
        auth = self._session.client_auth(self._session.token_endpoint_auth_method)
        try:
            resp = self._session.post(
                url,
                data={"client_id": self.settings.client_id, "scope": " ".join(self.settings.scopes)},
                auth=auth,
                withhold_token=True,
                timeout=self.settings.http_timeout_s,
                allow_redirects=False,
                stream=True,
                headers={"Accept": "application/json"},
            )
            try:
                status = resp.status_code
                body = _read_capped(resp)
            finally:
                resp.close()
        except requests.RequestException as exc:
            raise OidcError(
                f"could not reach the device authorization endpoint ({type(exc).__name__})"
            ) from exc
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise OidcError(f"the device authorization endpoint answered HTTP {status} without a JSON object")
        if "error" in doc or status != 200:
            raise OidcError(
                f"the identity provider refused the device login request: {_safe_code(doc.get('error'))}"
            )
        return _parse_device_response(doc)

    def _poll(self, token_endpoint: str, device_code: str) -> str | dict[str, Any]:
        """One token request: the token dict, or 'authorization_pending' / 'slow_down'."""
        try:
            token = self._session.fetch_token(
                token_endpoint,
                grant_type=DEVICE_CODE_GRANT_TYPE,
                device_code=device_code,
                timeout=self.settings.http_timeout_s,
                allow_redirects=False,
            )
        except OAuthError as exc:
            code = _safe_code(exc.error)
            if code in ("authorization_pending", "slow_down"):
                return code
            if code == "expired_token":
                raise OidcError(_EXPIRED) from None
            if code == "access_denied":
                raise OidcError("login denied at the identity provider") from None
            raise OidcError(f"login failed: the identity provider answered {code}") from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "error"
            raise OidcError(f"the token endpoint failed (HTTP {status})") from None
        except requests.RequestException as exc:
            raise OidcError(f"could not reach the token endpoint ({type(exc).__name__})") from None
        except ValueError:
            raise OidcError("the token endpoint answered without a JSON object") from None
        return dict(token)


def _parse_device_response(doc: dict[str, Any]) -> tuple[str, DevicePrompt]:
    """Type-check the device authorization response; everything shown to the user is sanitised."""
    device_code = doc.get("device_code")
    user_code = doc.get("user_code")
    if not isinstance(device_code, str) or not device_code:
        raise OidcError("the device authorization response has no device_code")
    if (
        not isinstance(user_code, str)
        or not 0 < len(user_code) <= 64
        or not all(ch.isascii() and ch.isprintable() for ch in user_code)
    ):
        raise OidcError("the device authorization response has no usable user_code")
    # "verification_url" is Google's pre-RFC spelling.
    verification_uri = _check_url(
        doc.get("verification_uri", doc.get("verification_url")), "verification_uri"
    )
    complete = doc.get("verification_uri_complete")
    if complete is not None:
        complete = _check_url(complete, "verification_uri_complete")
    expires_in = doc.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or expires_in <= 0:
        raise OidcError("the device authorization response has no valid expires_in")
    interval = doc.get("interval", _DEFAULT_INTERVAL_S)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
        interval = _DEFAULT_INTERVAL_S
    prompt = DevicePrompt(
        verification_uri=_one_line(verification_uri, 500),
        verification_uri_complete=_one_line(complete, 500) if complete else None,
        user_code=user_code,
        expires_in=int(min(expires_in, _MAX_DEVICE_LIFETIME_S)),
        interval=int(min(max(interval, 1), 60)),
    )
    return device_code, prompt
