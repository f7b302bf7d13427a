"""OIDC device login and ID token validation against a real provider on loopback (no mocks).

Only time is faked: ``FakeClock.sleep`` records the requested wait and advances the clock instead of
sleeping, so a login with 5 s polls runs in milliseconds while the provider still sees every poll.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bastion.identity.oidc import (
    DeviceLogin,
    DevicePrompt,
    OidcClient,
    OidcError,
    OidcIdentity,
    OidcSettings,
    format_prompt,
)
from tests.oidc_provider import Provider, running_provider


class FakeClock:
    """``sleep`` and ``now`` for ``DeviceLogin.run``; ``on_sleep(n)`` runs at the n-th sleep (1-based)."""

    def __init__(self, on_sleep: Callable[[int], None] | None = None) -> None:
        self.t = time.time()
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))

    def now(self) -> float:
        return self.t


@pytest.fixture
def provider() -> Iterator[Provider]:
    with running_provider() as p:
        yield p
        assert p.errors == []  # the provider itself never crashed


def settings_for(provider: Provider, **overrides: Any) -> OidcSettings:
    values: dict[str, Any] = {
        "issuer": provider.issuer,
        "client_id": provider.client_id,
        "client_secret": provider.client_secret,
    }
    values.update(overrides)
    return OidcSettings(**values)


def approve_at(provider: Provider, n: int, **approve: Any) -> Callable[[int], None]:
    """A sleep hook: the user approves in the browser while the client waits before poll ``n``."""

    def hook(count: int) -> None:
        if count == n:
            (code,) = provider.pending_user_codes()
            provider.approve(code, **approve)

    return hook


def login(provider: Provider, clock: FakeClock, **overrides: Any) -> tuple[OidcIdentity, list[DevicePrompt]]:
    shown: list[DevicePrompt] = []
    identity = DeviceLogin(settings_for(provider, **overrides)).run(
        shown.append, sleep=clock.sleep, now=clock.now
    )
    return identity, shown


def assert_clean(message: str, provider: Provider, *extra_secrets: str) -> None:
    """An error message never carries a secret, a token, a device code or a user code."""
    assert "\n" not in message
    secrets = [*extra_secrets, *provider.issued_id_tokens]
    if provider.client_secret:
        secrets.append(provider.client_secret)
    for token in provider.issued_tokens:
        secrets.append(token["access_token"])
    for credential in provider.device_credentials.values():
        secrets += [credential["device_code"], credential["user_code"]]
    for secret in secrets:
        assert secret not in message
    for token in provider.issued_id_tokens:
        for part in token.split("."):
            if len(part) > 16:
                assert part not in message


def login_error(provider: Provider, clock: FakeClock, **overrides: Any) -> str:
    with pytest.raises(OidcError) as info:
        login(provider, clock, **overrides)
    message = str(info.value)
    assert_clean(message, provider)
    return message


# -- the happy path --------------------------------------------------------------------------------


def test_device_login_success_maps_groups_and_shows_the_prompt(provider: Provider) -> None:
    clock = FakeClock(approve_at(provider, 2))
    identity, shown = login(provider, clock)

    assert identity.issuer == provider.issuer
    assert identity.subject == "alice"
    assert identity.groups == ["engineering", "dba"]
    assert identity.claims["email"] == "alice@example.com"
    assert identity.expires_at == identity.claims["exp"] > time.time()

    (prompt,) = shown
    assert prompt.verification_uri == provider.issuer + "/device"
    assert prompt.verification_uri_complete == f"{provider.issuer}/device?user_code={prompt.user_code}"
    assert prompt.interval == 5 and prompt.expires_in == 600
    assert provider.user_grants[prompt.user_code][1] is True  # the code the user saw is the one approved

    # The provider really saw the polls, and the client waited the interval before each.
    assert provider.polls == ["authorization_pending", "issued"]
    assert clock.sleeps == [5, 5]
    assert provider.device_credentials == {}  # the device code was consumed

    text = format_prompt(prompt, bastion_name="prod-eu-1", key_fingerprint="SHA256:abcDEF123")
    assert 'bastion "prod-eu-1"' in text
    assert "SHA256:abcDEF123" in text
    assert prompt.user_code in text and prompt.verification_uri in text
    assert "phishing" in text


def test_public_client_logs_in_without_a_secret() -> None:
    with running_provider(client_secret=None) as provider:
        identity, _ = login(provider, FakeClock(approve_at(provider, 1)))
    assert identity.subject == "alice"


@pytest.mark.parametrize(
    ("claims", "groups_claim", "expected"),
    [
        ({"groups": "admins"}, "groups", ["admins"]),
        ({"groups": ["a", 7, None, "b", "a", {"x": 1}]}, "groups", ["a", "b"]),
        ({"groups": 42}, "groups", []),
        ({"groups": {"admins": True}}, "groups", []),
        ({}, "groups", []),
        ({"roles": ["dba"], "groups": ["ignored"]}, "roles", ["dba"]),
    ],
)
def test_groups_claim_shapes_never_crash(
    provider: Provider, claims: dict[str, Any], groups_claim: str, expected: list[str]
) -> None:
    identity, _ = login(
        provider, FakeClock(approve_at(provider, 1, claims=claims)), groups_claim=groups_claim
    )
    assert identity.groups == expected


@pytest.mark.parametrize(("offered", "expected"), [(None, 5), (7, 7)])
def test_poll_interval_honoured_and_defaults_to_5s(offered: int | None, expected: int) -> None:
    with running_provider(device_interval=offered) as provider:
        clock = FakeClock(approve_at(provider, 3))
        _, (prompt,) = login(provider, clock)
    assert prompt.interval == expected
    assert clock.sleeps == [expected] * 3


# -- the device flow's failure answers ---------------------------------------------------------------


def test_denied_login(provider: Provider) -> None:
    def deny(count: int) -> None:
        if count == 2:
            provider.deny(provider.pending_user_codes()[0])

    message = login_error(provider, FakeClock(deny))
    assert message.startswith("login denied")
    assert provider.polls == ["authorization_pending", "access_denied"]


def test_device_code_expired_at_the_provider(provider: Provider) -> None:
    def expire(count: int) -> None:
        if count == 2:
            provider.expire_device_codes()

    message = login_error(provider, FakeClock(expire))
    assert message.startswith("device code expired")
    assert provider.polls == ["authorization_pending", "expired_token"]


def test_device_code_deadline_enforced_by_the_client() -> None:
    with running_provider(device_expires_in=12) as provider:
        clock = FakeClock()
        message = login_error(provider, clock)
        assert message.startswith("device code expired")
        # polls at t+5 and t+10; at t+15 the code's own 12 s lifetime is over, so no third poll
        assert provider.polls == ["authorization_pending", "authorization_pending"]
        assert clock.sleeps == [5, 5, 5]


def test_slow_down_adds_5s_cumulatively(provider: Provider) -> None:
    provider.force_slow_down(2)
    clock = FakeClock(approve_at(provider, 4))
    identity, _ = login(provider, clock)
    assert identity.subject == "alice"
    assert provider.polls == ["slow_down", "slow_down", "authorization_pending", "issued"]
    assert clock.sleeps == [5, 10, 15, 15]


def test_wrong_client_secret_names_the_oauth_error_not_the_secret(provider: Provider) -> None:
    wrong = "definitely-not-the-secret-123"
    with pytest.raises(OidcError) as info:
        login(provider, FakeClock(), client_secret=wrong)
    message = str(info.value)
    assert "invalid_client" in message
    assert_clean(message, provider, wrong)


def test_client_secret_with_reserved_characters_is_form_encoded() -> None:
    """RFC 6749 2.3.1: Basic auth carries the form-urlencoded secret; authlib's server decodes it."""
    with running_provider(client_secret="p%41ss+wo:rd/é") as provider:
        identity, _ = login(provider, FakeClock(approve_at(provider, 1)))
    assert identity.subject == "alice"


def test_token_endpoint_outage_is_one_clean_line(provider: Provider) -> None:
    def outage(count: int) -> None:
        if count == 2:
            provider.token_endpoint_status = 503

    message = login_error(provider, FakeClock(outage))
    assert message == "the token endpoint failed (HTTP 503)"
    assert provider.polls == ["authorization_pending", "http-503"]


# -- bad ID tokens through the whole flow -----------------------------------------------------------


@pytest.mark.parametrize(
    ("flaw", "expected"),
    [
        ("wrong_audience", "audience does not include this client"),
        ("wrong_issuer", "issuer does not match"),
        ("expired", "has expired"),
        ("bad_signature", "signature is invalid"),
        ("alg_none", "algorithm 'none' is not allowed"),
        ("hs256_public_key", "algorithm 'HS256' is not allowed"),
        ("unknown_kid", "is not in the provider's JWKS"),
    ],
)
def test_bad_id_tokens_are_refused(provider: Provider, flaw: str, expected: str) -> None:
    provider.set_id_token_flaw(flaw)
    message = login_error(provider, FakeClock(approve_at(provider, 1)))
    assert expected in message
    assert provider.polls == ["issued"]
    assert len(provider.issued_id_tokens) == 1  # and assert_clean checked it is not in the message


def test_hs256_with_public_key_is_refused_even_when_hs256_would_be_checked(provider: Provider) -> None:
    """The configured algorithms can never include HS*, and joserfc refuses an RSA key for HMAC."""
    with pytest.raises(OidcError, match="symmetric"):
        settings_for(provider, algorithms=["RS256", "HS256"])
    token = provider.mint_id_token(flaw="hs256_public_key")
    with pytest.raises(OidcError, match="HS256"):
        OidcClient(settings_for(provider)).validate_id_token(token)


# -- JWKS caching, key rotation and kid handling ---------------------------------------------------


def test_validate_id_token_on_its_own(provider: Provider) -> None:
    client = OidcClient(settings_for(provider))
    claims = client.validate_id_token(provider.mint_id_token("bob", {"groups": ["x"]}))
    assert claims["sub"] == "bob" and claims["aud"] == provider.client_id
    assert provider.hits["/jwks"] == 1
    client.validate_id_token(provider.mint_id_token())
    assert provider.hits["/jwks"] == 1  # cached in the instance


def test_unknown_kid_refetches_the_jwks_once_then_refuses(provider: Provider) -> None:
    client = OidcClient(settings_for(provider))
    client.validate_id_token(provider.mint_id_token())
    assert provider.hits["/jwks"] == 1
    with pytest.raises(OidcError, match="not in the provider's JWKS") as info:
        client.validate_id_token(provider.mint_id_token(flaw="unknown_kid"))
    assert_clean(str(info.value), provider)
    assert provider.hits["/jwks"] == 2


def test_key_rotation_is_accepted_after_one_refetch(provider: Provider) -> None:
    client = OidcClient(settings_for(provider))
    client.validate_id_token(provider.mint_id_token())
    assert provider.hits["/jwks"] == 1
    new_kid = provider.rotate_key()
    token = provider.mint_id_token()
    assert f'"kid":"{new_kid}"' in _header_json(token)
    assert client.validate_id_token(token)["sub"] == "alice"
    assert provider.hits["/jwks"] == 2
    client.validate_id_token(provider.mint_id_token())
    assert provider.hits["/jwks"] == 2


def test_key_rotation_during_a_device_login(provider: Provider) -> None:
    """Rotation between the client's JWKS fetch and the next login's token still works."""
    login_client = DeviceLogin(settings_for(provider))
    login_client.validate_id_token(provider.mint_id_token())  # caches the JWKS with key-1
    provider.rotate_key()
    clock = FakeClock(approve_at(provider, 1))
    identity = login_client.run(lambda _: None, sleep=clock.sleep, now=clock.now)
    assert identity.subject == "alice"
    assert provider.hits["/jwks"] == 2


def test_token_without_kid_only_with_a_single_candidate_key(provider: Provider) -> None:
    client = OidcClient(settings_for(provider))
    assert client.validate_id_token(provider.mint_id_token(header={"kid": None}))["sub"] == "alice"
    provider.rotate_key()
    with pytest.raises(OidcError, match=r"no kid .* refusing to guess"):
        OidcClient(settings_for(provider)).validate_id_token(provider.mint_id_token(header={"kid": None}))


# -- claims ------------------------------------------------------------------------------------------


def test_multiple_audiences_require_azp_equal_to_client_id(provider: Provider) -> None:
    client = OidcClient(settings_for(provider))
    both = [provider.client_id, "another-client"]
    with pytest.raises(OidcError, match="no azp"):
        client.validate_id_token(provider.mint_id_token(audience=both))
    with pytest.raises(OidcError, match="azp is not this client"):
        client.validate_id_token(provider.mint_id_token(claims={"azp": "another-client"}, audience=both))
    claims = client.validate_id_token(
        provider.mint_id_token(claims={"azp": provider.client_id}, audience=both)
    )
    assert claims["azp"] == provider.client_id
    with pytest.raises(OidcError, match="audience"):
        client.validate_id_token(provider.mint_id_token(audience=["another-client"]))


def test_times_are_checked_with_leeway(provider: Provider) -> None:
    client = OidcClient(settings_for(provider, leeway_s=60))
    now = int(time.time())
    client.validate_id_token(provider.mint_id_token(claims={"nbf": now + 30, "iat": now + 30}))
    client.validate_id_token(provider.mint_id_token(claims={"exp": now - 30}))
    with pytest.raises(OidcError, match="not valid yet"):
        client.validate_id_token(provider.mint_id_token(claims={"nbf": now + 600}))
    with pytest.raises(OidcError, match="issued in the future"):
        client.validate_id_token(provider.mint_id_token(claims={"iat": now + 600}))
    with pytest.raises(OidcError, match="has expired"):
        client.validate_id_token(provider.mint_id_token(claims={"exp": now - 90}))
    with pytest.raises(OidcError, match="lacks required claim"):
        client.validate_id_token(provider.mint_id_token(claims={"iat": None}))
    with pytest.raises(OidcError, match="expired"):
        client.validate_id_token(provider.mint_id_token(), now=now + 3600 + 61)


def test_garbage_tokens_are_refused_cleanly(provider: Provider) -> None:
    client = OidcClient(settings_for(provider))
    for garbage in ["", "abc", "a.b.c", "a.b.c.d.e", "é.é.é", "x" * 70000]:
        with pytest.raises(OidcError):
            client.validate_id_token(garbage)


# -- discovery and transport -----------------------------------------------------------------------


def test_discovery_issuer_mismatch_is_refused(provider: Provider) -> None:
    provider.discovery_issuer = provider.issuer + "/"
    message = login_error(provider, FakeClock())
    assert message.startswith("OIDC discovery issuer mismatch")
    assert provider.hits["/device_authorization"] == 0


def test_discovered_http_endpoint_off_loopback_is_refused(provider: Provider) -> None:
    provider.discovery_overrides["jwks_uri"] = "http://idp.example.com/jwks"
    with pytest.raises(OidcError, match="discovered jwks_uri must use https"):
        OidcClient(settings_for(provider)).validate_id_token(provider.mint_id_token())


def test_explicit_endpoints_skip_discovery(provider: Provider) -> None:
    provider.discovery_issuer = "https://not-used.example.com"
    clock = FakeClock(approve_at(provider, 1))
    identity, _ = login(
        provider,
        clock,
        device_authorization_endpoint=provider.issuer + "/device_authorization",
        token_endpoint=provider.issuer + "/token",
        jwks_uri=provider.issuer + "/jwks",
    )
    assert identity.subject == "alice"
    assert provider.hits["/.well-known/openid-configuration"] == 0


def test_issuer_with_a_path() -> None:
    with running_provider(issuer_path="/realms/corp") as provider:
        identity, _ = login(provider, FakeClock(approve_at(provider, 1)))
    assert identity.issuer.endswith("/realms/corp")


@pytest.mark.parametrize(
    "issuer",
    ["http://idp.example.com", "http://10.0.0.5:8080", "http://127.0.0.1.nip.io", "ftp://127.0.0.1", "idp"],
)
def test_http_issuer_off_loopback_is_refused_at_construction(issuer: str) -> None:
    with pytest.raises(OidcError):
        OidcSettings(issuer=issuer, client_id="c")


def test_loopback_and_https_issuers_are_accepted() -> None:
    for issuer in ["https://idp.example.com", "http://127.0.0.1:9", "http://[::1]:9", "http://localhost:9"]:
        assert OidcSettings(issuer=issuer, client_id="c").issuer == issuer


def test_explicit_http_endpoint_off_loopback_is_refused() -> None:
    with pytest.raises(OidcError, match="https"):
        OidcSettings(
            issuer="https://idp.example.com", client_id="c", token_endpoint="http://idp.example.com/t"
        )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"algorithms": ["none"]}, "'none' is refused"),
        ({"algorithms": ["None"]}, "'none' is refused"),
        ({"algorithms": ["HS256"]}, "symmetric"),
        ({"algorithms": ["RS256", "HS512"]}, "symmetric"),
        ({"algorithms": []}, "must not be empty"),
        ({"algorithms": ["XS999"]}, "not supported"),
        ({"scopes": ["profile"]}, "openid"),
        ({"client_id": ""}, "client_id"),
        ({"leeway_s": -1}, "leeway"),
    ],
)
def test_settings_refuse_insecure_or_broken_values(overrides: dict[str, Any], match: str) -> None:
    values: dict[str, Any] = {"issuer": "https://idp.example.com", "client_id": "c", **overrides}
    with pytest.raises(OidcError, match=match):
        OidcSettings(**values)


def test_client_secret_is_not_in_the_settings_repr() -> None:
    settings = OidcSettings(issuer="https://idp.example.com", client_id="c", client_secret="hunter2-xyz")
    assert "hunter2-xyz" not in repr(settings)


def test_format_prompt_strips_control_characters() -> None:
    prompt = DevicePrompt("https://idp.example.com/device", None, "ABCD-EFGH", 900, 5)
    text = format_prompt(prompt, bastion_name="prod\x1b[2J\nevil", key_fingerprint="SHA256:x\x07y")
    assert "\x1b" not in text and "\x07" not in text
    assert 'bastion "prod [2J evil"' in text
    assert "15 minutes" in text


def _header_json(token: str) -> str:
    head = token.split(".")[0]
    return base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)).decode()
