"""The OIDC step of a login: config → client settings, device login, then the subject binding check.

Shared by the TUI's login screen and headless logins; `show` decides where the code appears.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bastion.config import Config, read_secret
from bastion.identity.binding import check_binding
from bastion.identity.oidc import DeviceLogin, DevicePrompt, OidcIdentity, OidcSettings
from bastion.store.base import Store


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
