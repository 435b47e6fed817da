"""The one error class for domain errors: the CLI maps it to exit status 2 with one line.

raise KvittoError("orders.csv line 4, field granted_minutes_month: 'abc' is not a number")
"""


class KvittoError(Exception):
    """Unusable input or a refused operation, with a message a person can act on."""


class NotBuiltError(KvittoError):
    """A planned subcommand that does not exist yet: it says so instead of doing nothing."""
