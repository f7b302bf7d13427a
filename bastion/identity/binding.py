"""The OIDC subject bound to an SSH-key user: the first device login binds it, later logins must match.

Without the binding, anyone holding a user's SSH key could finish the device login with their own
identity-provider account. The binding lasts binding_ttl from when it was made (not extended by use), so an
account change at the provider is possible without an operator, but never silently within the window.
"""

from __future__ import annotations

from bastion.identity.oidc import OidcIdentity
from bastion.store.base import OidcBinding, Store


class BindingError(Exception):
    """The OIDC account differs from the one bound to this user; one line for the user."""


def check_binding(store: Store, user: str, identity: OidcIdentity, *, ttl_s: float, now: float) -> str:
    """'bound' for a new binding (or one renewed after expiry), 'matched' for a valid one."""
    current = store.get_binding(user)
    if current is not None and current.expires_at > now:
        if (current.issuer, current.subject) != (identity.issuer, identity.subject):
            raise BindingError(
                f"user {user} is bound to a different identity-provider account until the binding expires"
            )
        return "matched"
    new = OidcBinding(user, identity.issuer, identity.subject, now, now + ttl_s)
    if not store.replace_binding(current, new):
        # Another login bound (or renewed) this user meanwhile: judge against what it stored.
        winner = store.get_binding(user)
        if winner is None or (winner.issuer, winner.subject) != (identity.issuer, identity.subject):
            raise BindingError(f"user {user} was just bound to a different identity-provider account")
        return "matched"
    return "bound"
