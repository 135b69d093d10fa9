"""Authentication and authorisation: accounts, tokens, roles and org-unit scope."""

from api.auth.service import (
    AUDIENCE,
    FAILED_WINDOW_S,
    ISSUER,
    MAX_FAILED_LOGINS,
    ROLES,
    InvalidToken,
    Principal,
    Role,
    hash_password,
    issue_token,
    read_token,
    verify_password,
)

__all__ = [
    "AUDIENCE",
    "FAILED_WINDOW_S",
    "ISSUER",
    "MAX_FAILED_LOGINS",
    "ROLES",
    "InvalidToken",
    "Principal",
    "Role",
    "hash_password",
    "issue_token",
    "read_token",
    "verify_password",
]
