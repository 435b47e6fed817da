"""What a bad board file or configuration raises. The loaders (device.board.boards, .config) and
their checks (board_check, config_check) share these, so the checks, loaded for one call and
dropped after it, need not import their loader back.

    from device.board.errors import BoardError, ConfigError
    raise ConfigError("config.json: field 'role': must be one of tag, lock, alarm")
"""


class BoardError(ValueError):
    """A board file that cannot drive a board: the message names the file and the field."""


class ConfigError(ValueError):
    """A configuration the device cannot run with: the message names the file and field
    (also kept apart in `field` and `problem` where there is one)."""

    field = None
    problem = None
