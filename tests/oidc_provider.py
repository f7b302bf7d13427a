"""A real OIDC provider on loopback, for tests: authlib's server classes behind stdlib http.server.

The RFC 8628 logic (client authentication, device authorization, polling answers) is authlib's own
``AuthorizationServer`` + ``DeviceAuthorizationEndpoint`` + ``DeviceCodeGrant``; this module only
adapts stdlib requests to authlib's request objects (as authlib's Flask/Django integrations do) and
stores state in memory. Tests drive it the way a user and an attacker would: approve or deny a user
code, force ``slow_down``, expire device codes, rotate keys, and issue deliberately bad ID tokens.

Usage::

    with running_provider() as provider:
        settings = OidcSettings(issuer=provider.issuer, client_id=provider.client_id,
                                client_secret=provider.client_secret)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from authlib.common.security import generate_token
from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, JsonPayload, JsonRequest, OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc8628 import (
    DEVICE_CODE_GRANT_TYPE,
    DeviceAuthorizationEndpoint,
    DeviceCodeGrant,
    DeviceCredentialDict,
)
from joserfc import jwt
from joserfc.jwk import RSAKey

__all__ = ["ID_TOKEN_FLAWS", "Provider", "running_provider"]

#: Deliberately bad ID tokens the provider can issue, each one a way a real attack or bug looks.
ID_TOKEN_FLAWS = frozenset(
    {
        "wrong_audience",  # aud is another client
        "wrong_issuer",  # iss is another provider
        "expired",  # exp an hour ago
        "bad_signature",  # signed by a key not in the JWKS, under the current kid
        "alg_none",  # unsigned
        "hs256_public_key",  # HS256 with the RSA public key PEM as HMAC secret (key confusion)
        "unknown_kid",  # signed by a key whose kid is not (and never will be) in the JWKS
    }
)

_RANDOM_SECRET = "<random>"  # sentinel: each provider gets its own fresh client secret
SCOPES_SUPPORTED = ["openid", "profile", "email", "groups"]
DEFAULT_CLAIMS: dict[str, Any] = {
    "email": "alice@example.com",
    "name": "Alice Example",
    "groups": ["engineering", "dba"],
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_b64(obj: dict[str, Any]) -> str:
    return _b64url(json.dumps(obj, separators=(",", ":")).encode())


def _new_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"}, private=True)


# -- stdlib request/response <-> authlib adapters ---------------------------------------------------


@dataclass
class HttpRequest:
    """What the stdlib handler read off the wire, framework-neutral."""

    method: str
    url: str
    headers: Message
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    body: bytes


@dataclass
class HttpResponse:
    """What authlib's server returns through ``handle_response``; the handler writes it out."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


class _Payload(OAuth2Payload):
    """Request parameters: the form body for POST, the query for GET (as Flask's request.values)."""

    def __init__(self, values: dict[str, list[str]]) -> None:
        self._values = values

    @property
    def data(self) -> dict[str, str]:
        return {key: values[0] for key, values in self._values.items() if values}

    @property
    def datalist(self) -> dict[str, list[str]]:
        return self._values


class StdlibOAuth2Request(OAuth2Request):
    """authlib's OAuth2Request over an ``HttpRequest``."""

    def __init__(self, request: HttpRequest) -> None:
        super().__init__(method=request.method, uri=request.url, headers=request.headers)
        self._request = request
        values = {**request.query, **request.form}
        self.payload = _Payload(values)

    @property
    def args(self) -> dict[str, str]:
        return {key: values[0] for key, values in self._request.query.items() if values}

    @property
    def form(self) -> dict[str, str]:
        return {key: values[0] for key, values in self._request.form.items() if values}


class _JsonBody(JsonPayload):
    def __init__(self, body: bytes) -> None:
        self._body = body

    @property
    def data(self) -> Any:
        return json.loads(self._body or b"{}")


class StdlibJsonRequest(JsonRequest):
    """authlib's JsonRequest over an ``HttpRequest`` (unused by the device flow; for completeness)."""

    def __init__(self, request: HttpRequest) -> None:
        super().__init__(request.method, request.url, request.headers)
        self.payload = _JsonBody(request.body)


# -- authlib server pieces -----------------------------------------------------------------------


@dataclass
class Client(ClientMixin):
    """A registered client: confidential when it has a secret, public otherwise."""

    client_id: str
    client_secret: str | None

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str) -> str:
        allowed = [s for s in scope_to_list(scope) or [] if s in SCOPES_SUPPORTED]
        return " ".join(allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        if self.client_secret is None:
            return False
        return hmac.compare_digest(self.client_secret.encode(), client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.client_secret is None:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == DEVICE_CODE_GRANT_TYPE


@dataclass
class User:
    """The person who approved a user code in the (imaginary) browser."""

    subject: str
    claims: dict[str, Any]


class _DeviceAuthorizationEndpoint(DeviceAuthorizationEndpoint):
    server: _Server

    def get_verification_uri(self) -> str:
        return self.server.provider.issuer + "/device"

    def create_endpoint_response(self, request: OAuth2Request) -> tuple[int, dict[str, Any], Any]:
        provider = self.server.provider
        self.EXPIRES_IN = provider.device_expires_in
        self.INTERVAL = provider.device_interval or 5
        status, data, headers = super().create_endpoint_response(request)
        if provider.device_interval is None:
            data.pop("interval", None)  # RFC 8628: the client must then default to 5 s
        return status, data, headers

    def save_device_credential(self, client_id: str, scope: str, data: dict[str, Any]) -> None:
        provider = self.server.provider
        credential = DeviceCredentialDict(
            client_id=client_id,
            scope=scope,
            expires_at=time.time() + data["expires_in"],
            **data,
        )
        provider.device_credentials[data["device_code"]] = credential


class _DeviceCodeGrant(DeviceCodeGrant):
    server: _Server

    def query_device_credential(self, device_code: str) -> DeviceCredentialDict | None:
        return self.server.provider.device_credentials.get(device_code)

    def query_user_grant(self, user_code: str) -> tuple[User, bool] | None:
        return self.server.provider.user_grants.get(user_code)

    def should_slow_down(self, credential: DeviceCredentialDict) -> bool:
        provider = self.server.provider
        if provider.slow_down_remaining > 0:
            provider.slow_down_remaining -= 1
            return True
        return False


class _Server(AuthorizationServer):
    """authlib's AuthorizationServer bound to a ``Provider`` and to stdlib requests."""

    def __init__(self, provider: Provider) -> None:
        super().__init__(scopes_supported=SCOPES_SUPPORTED)
        self.provider = provider
        self.signals: list[str] = []
        bearer = BearerTokenGenerator(access_token_generator=lambda **_: generate_token(42))
        self.register_token_generator("default", self._token_generator(bearer))
        self.register_grant(_DeviceCodeGrant)
        self.register_endpoint(_DeviceAuthorizationEndpoint)

    def _token_generator(self, bearer: BearerTokenGenerator) -> Any:
        def generate(
            grant_type: str,
            client: Client,
            user: User | None = None,
            scope: str | None = None,
            expires_in: int | None = None,
            include_refresh_token: bool = True,
        ) -> dict[str, Any]:
            token = bearer(grant_type, client, user, scope, expires_in, include_refresh_token=False)
            if user is not None and "openid" in (scope_to_list(scope) or []):
                token["id_token"] = self.provider.mint_id_token(
                    user.subject, user.claims, flaw=self.provider.id_token_flaw, audience=client.client_id
                )
            return token

        return generate

    def query_client(self, client_id: str) -> Client | None:
        return self.provider.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        # A device code is single-use: once it produced a token it is gone.
        credential = request.credential
        if credential is not None:
            self.provider.device_credentials.pop(credential["device_code"], None)
        self.provider.issued_tokens.append(dict(token))

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        if isinstance(request, OAuth2Request):
            return request
        return StdlibOAuth2Request(request)

    def create_json_request(self, request: Any) -> JsonRequest:
        return StdlibJsonRequest(request)

    def handle_response(self, status: int, body: Any, headers: Any) -> HttpResponse:
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        return HttpResponse(status, body or b"", list(headers or []))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.signals.append(name)


# -- the HTTP server ----------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    provider: Provider


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest output is for test failures."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        provider = self.server.provider
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        try:
            response = provider.handle(self.command, self.path, self.headers, body)
        except Exception as exc:  # a provider bug must show up in the test, not as a hang
            provider.errors.append(repr(exc))
            response = HttpResponse(500, b'{"error":"server_error"}', [("Content-Type", "application/json")])
        self.send_response(response.status)
        for name, value in response.headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)


class Provider:
    """An OIDC provider on 127.0.0.1 with test controls. Start it with ``running_provider``."""

    def __init__(
        self,
        *,
        client_id: str = "bastion-test",
        client_secret: str | None = _RANDOM_SECRET,
        issuer_path: str = "",
        device_expires_in: int = 600,
        device_interval: int | None = 5,
        id_token_lifetime: int = 3600,
    ) -> None:
        if client_secret is _RANDOM_SECRET:
            client_secret = "cs-" + secrets.token_urlsafe(24)
        self.client_id = client_id
        #: None makes a public client (token endpoint auth "none")
        self.client_secret = client_secret
        self.issuer_path = issuer_path.rstrip("/")
        self.device_expires_in = device_expires_in
        self.device_interval = device_interval
        self.id_token_lifetime = id_token_lifetime

        # test knobs
        #: issue this flaw in every ID token from the token endpoint until reset to None
        self.id_token_flaw: str | None = None
        #: the "issuer" in the discovery document, when a test wants it to lie
        self.discovery_issuer: str | None = None
        self.slow_down_remaining = 0
        #: merged into the discovery document (e.g. an http jwks_uri off loopback)
        self.discovery_overrides: dict[str, Any] = {}
        #: when set, the token endpoint answers this HTTP status with an HTML page (an outage)
        self.token_endpoint_status: int | None = None

        # state
        self.clients: dict[str, Client] = {client_id: Client(client_id, client_secret)}
        self.device_credentials: dict[str, DeviceCredentialDict] = {}
        self.user_grants: dict[str, tuple[User, bool]] = {}
        self.signing_key = _new_key("key-1")
        self.jwks_keys: list[RSAKey] = [self.signing_key]
        self._attacker_key = _new_key("attacker")
        self._next_kid = 2

        # observations
        self.hits: Counter[str] = Counter()
        self.polls: list[str] = []  # each token endpoint answer: an OAuth error code or "issued"
        self.issued_tokens: list[dict[str, Any]] = []
        self.issued_id_tokens: list[str] = []
        self.errors: list[str] = []

        self._lock = threading.RLock()
        self._server = _Server(self)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        return self.base_url + self.issuer_path

    def start(self) -> Provider:
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.provider = self
        self._httpd = httpd
        self.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="oidc-provider", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- user and test controls ---------------------------------------------------------------

    def pending_user_codes(self) -> list[str]:
        """User codes of device logins that nobody approved or denied yet."""
        with self._lock:
            return [
                c["user_code"]
                for c in self.device_credentials.values()
                if c["user_code"] not in self.user_grants
            ]

    def approve(self, user_code: str, subject: str = "alice", claims: dict[str, Any] | None = None) -> None:
        """As if ``subject`` entered the code in the browser and clicked Allow."""
        with self._lock:
            self._require_user_code(user_code)
            user = User(subject, dict(DEFAULT_CLAIMS if claims is None else claims))
            self.user_grants[user_code] = (user, True)

    def deny(self, user_code: str, subject: str = "alice") -> None:
        """As if the user entered the code and clicked Deny."""
        with self._lock:
            self._require_user_code(user_code)
            self.user_grants[user_code] = (User(subject, {}), False)

    def force_slow_down(self, polls: int) -> None:
        """Answer ``slow_down`` to the next ``polls`` pending polls."""
        with self._lock:
            self.slow_down_remaining = polls

    def expire_device_codes(self) -> None:
        """Make every outstanding device code expired, as if its lifetime had run out."""
        with self._lock:
            for credential in self.device_credentials.values():
                credential["expires_at"] = time.time() - 1

    def set_id_token_flaw(self, flaw: str | None) -> None:
        """Issue ID tokens with ``flaw`` (one of ``ID_TOKEN_FLAWS``) from now on; None for good ones."""
        if flaw is not None and flaw not in ID_TOKEN_FLAWS:
            raise ValueError(f"unknown flaw {flaw!r}")
        with self._lock:
            self.id_token_flaw = flaw

    def rotate_key(self) -> str:
        """Publish a new signing key under a new kid and sign with it from now on; the old key stays."""
        with self._lock:
            kid = f"key-{self._next_kid}"
            self._next_kid += 1
            self.signing_key = _new_key(kid)
            self.jwks_keys.append(self.signing_key)
            return kid

    def mint_id_token(
        self,
        subject: str = "alice",
        claims: dict[str, Any] | None = None,
        *,
        flaw: str | None = None,
        audience: str | list[str] | None = None,
        header: dict[str, Any] | None = None,
    ) -> str:
        """An ID token as the token endpoint would issue it.

        ``claims`` replace the default profile claims and may override registered ones (``nbf``...)
        or remove them (``{"iat": None}``);
        ``header`` entries are merged into the JOSE header, a None value removing the entry.
        """
        if flaw is not None and flaw not in ID_TOKEN_FLAWS:
            raise ValueError(f"unknown flaw {flaw!r}")
        with self._lock:
            now = int(time.time())
            payload: dict[str, Any] = {
                "iss": self.issuer,
                "sub": subject,
                "aud": self.client_id if audience is None else audience,
                "iat": now,
                "nbf": now,
                "exp": now + self.id_token_lifetime,
                "auth_time": now,
            }
            for name, value in (DEFAULT_CLAIMS if claims is None else claims).items():
                if value is None:
                    payload.pop(name, None)
                else:
                    payload[name] = value
            key = self.signing_key
            head: dict[str, Any] = {"alg": "RS256", "kid": key.kid}
            if flaw == "wrong_audience":
                payload["aud"] = "some-other-client"
            elif flaw == "wrong_issuer":
                payload["iss"] = "https://evil.example.com"
            elif flaw == "expired":
                payload.update(iat=now - 7200, nbf=now - 7200, exp=now - 3600, auth_time=now - 7200)
            elif flaw == "bad_signature":
                key = self._attacker_key  # same kid as the real key, wrong private key
            elif flaw == "unknown_kid":
                key = self._attacker_key
                head["kid"] = "unknown-" + secrets.token_hex(4)
            for name, value in (header or {}).items():  # None removes a header, e.g. {"kid": None}
                if value is None:
                    head.pop(name, None)
                else:
                    head[name] = value

            if flaw == "alg_none":
                head = {**head, "alg": "none", "typ": "JWT"}
                token = f"{_json_b64(head)}.{_json_b64(payload)}."
            elif flaw == "hs256_public_key":
                head = {**head, "alg": "HS256", "typ": "JWT"}
                signing_input = f"{_json_b64(head)}.{_json_b64(payload)}"
                secret = self.signing_key.as_pem(private=False)
                mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
                token = f"{signing_input}.{_b64url(mac)}"
            else:
                token = jwt.encode(head, payload, key, algorithms=[head["alg"]])
            self.issued_id_tokens.append(token)
            return token

    def _require_user_code(self, user_code: str) -> None:
        if not any(c["user_code"] == user_code for c in self.device_credentials.values()):
            raise KeyError("no pending device login with that user code")

    # -- HTTP -----------------------------------------------------------------------------------

    def discovery_document(self) -> dict[str, Any]:
        issuer = self.issuer
        doc = {
            "issuer": self.discovery_issuer if self.discovery_issuer is not None else issuer,
            "device_authorization_endpoint": issuer + "/device_authorization",
            "token_endpoint": issuer + "/token",
            "jwks_uri": issuer + "/jwks",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "grant_types_supported": [DEVICE_CODE_GRANT_TYPE],
            "scopes_supported": SCOPES_SUPPORTED,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        }
        doc.update(self.discovery_overrides)
        return doc

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.as_dict(private=False) for key in self.jwks_keys]}

    def handle(self, method: str, raw_path: str, headers: Message, body: bytes) -> HttpResponse:
        """Route one request; called by the HTTP handler thread."""
        split = urlsplit(raw_path)
        form: dict[str, list[str]] = {}
        if (headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        request = HttpRequest(
            method=method,
            url=self.base_url + raw_path,
            headers=headers,
            query=parse_qs(split.query, keep_blank_values=True),
            form=form,
            body=body,
        )
        path = split.path
        if self.issuer_path and path.startswith(self.issuer_path + "/"):
            path = path[len(self.issuer_path) :]
        with self._lock:
            self.hits[path] += 1
            if method == "GET" and path == "/.well-known/openid-configuration":
                return _json_response(200, self.discovery_document())
            if method == "GET" and path == "/jwks":
                return _json_response(200, self.jwks())
            if method == "POST" and path == "/device_authorization":
                return self._server.create_endpoint_response("device_authorization", request)
            if method == "POST" and path == "/token" and self.token_endpoint_status is not None:
                self.polls.append(f"http-{self.token_endpoint_status}")
                page = b"<html><body>Service Unavailable</body></html>"
                return HttpResponse(self.token_endpoint_status, page, [("Content-Type", "text/html")])
            if method == "POST" and path == "/token":
                response = self._server.create_token_response(request)
                answer = json.loads(response.body or b"{}")
                self.polls.append(answer.get("error", "issued") if isinstance(answer, dict) else "?")
                return response
            if method == "GET" and path == "/device":
                page = b"Enter the code shown in your terminal. (Test provider: use Provider.approve.)\n"
                return HttpResponse(200, page, [("Content-Type", "text/plain; charset=utf-8")])
            return _json_response(404, {"error": "not_found"})


def _json_response(status: int, doc: dict[str, Any]) -> HttpResponse:
    return HttpResponse(status, json.dumps(doc).encode(), [("Content-Type", "application/json")])


@contextmanager
def running_provider(**opts: Any) -> Iterator[Provider]:
    """Start a ``Provider(**opts)`` on a free loopback port; stop it afterwards."""
    provider = Provider(**opts).start()
    try:
        yield provider
    finally:
        provider.stop()
