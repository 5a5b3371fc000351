"""The one error type of the Lite deployment path: its message is shown to the user as is."""


class LiteError(RuntimeError):
    """A failure the user can act on (bad input, missing environment, unsupported op ...)."""
