"""Expected errors: the CLI prints their message on one line and exits non-zero, no traceback."""


class IOCError(Exception):
    """An error the user can act on; the message says what happened and what to do."""

    exit_code = 1


class ConfigError(IOCError):
    """Bad settings or a malformed site file."""

    exit_code = 2


class ServiceUnreachable(IOCError):
    """PostgreSQL, Redis or Mosquitto cannot be reached."""

    exit_code = 3
