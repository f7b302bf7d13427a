"""The OIDC step of a login: config → client settings, device login, then the subject binding check.

Shared by the TUI's login screen and headless logins; `show` decides where the code appears.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bastion.config import Config, read_secret
from bastion.identity.binding import BindingError, check_binding
from bastion.identity.oidc import DeviceLogin, DevicePrompt, OidcError, OidcIdentity, OidcSettings
from bastion.store.base import Store

if TYPE_CHECKING:
    from bastion.session import Session


def settings_from_config(config: Config) -> OidcSettings:
    oidc = config.oidc
    assert oidc is not None
    return OidcSettings(
        issuer=oidc.issuer,
        client_id=oidc.client_id,
        client_secret=read_secret(oidc.client_secret_file) if oidc.client_secret_file else None,
        scopes=list(oidc.scopes),
        algorithms=list(oidc.algorithms),
        groups_claim=oidc.groups_claim,
        leeway_s=int(oidc.leeway_s),
        device_authorization_endpoint=oidc.device_authorization_endpoint,
        token_endpoint=oidc.token_endpoint,
        jwks_uri=oidc.jwks_uri,
    )


def authenticate(
    config: Config,
    store: Store,
    user: str,
    show: Callable[[DevicePrompt], None],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[OidcIdentity, str]:
    """Device login, then the binding check; returns the identity and 'bound' or 'matched'.

    Raises OidcError or BindingError with a one-line message.
    """
    assert config.oidc is not None
    client = DeviceLogin(settings_from_config(config))
    try:
        identity = client.run(show, sleep=sleep)
    finally:
        client.close()
    outcome = check_binding(store, user, identity, ttl_s=config.oidc.binding_ttl_s, now=time.time())
    return identity, outcome


def login_session(
    session: Session, show: Callable[[DevicePrompt], None], *, sleep: Callable[[float], None] = time.sleep
) -> str | None:
    """The OIDC step of a login: on success the session carries the identity's groups and subject and None
    is returned; otherwise the one-line reason (the caller records the refusal with session.refuse)."""
    try:
        identity, outcome = authenticate(session.config, session.store, session.user.name, show, sleep=sleep)
    except (OidcError, BindingError) as exc:
        return str(exc)
    session.groups = tuple(identity.groups)
    session.oidc = {"issuer": identity.issuer, "subject": identity.subject, "binding": outcome}
    return None
