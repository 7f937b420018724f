"""What a caller may see of the request log: the same scoping rules as the admin API."""

from __future__ import annotations

from modelyard.policy.auth import Principal
from modelyard.store.base import Role
from modelyard.store.requestlog import Visibility


def visibility_for(principal: Principal) -> Visibility:
    """Everything for the master key; a key-holder only its own key's requests; an admin or
    viewer key confined to an org, team or user only that org's, team's or user's."""
    key = principal.key
    if key is None:
        return Visibility()
    if principal.role is Role.KEY_HOLDER:
        return Visibility(key_id=key.id)
    return Visibility(team_id=key.team_id, user_id=key.user_id, org_id=key.org_id)
