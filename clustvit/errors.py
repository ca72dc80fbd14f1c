"""The user-facing error of a bad configuration (one line naming the file or key).

It lives apart from the config loader so that the model builder and the loader can both raise it
without importing each other.
"""


class ConfigError(ValueError):
    """A configuration problem; the message is one line naming the file/key."""
