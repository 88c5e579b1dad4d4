"""The one error hierarchy of LearnTrack.

Every error the project raises on purpose derives from :class:`LearnTrackError`, so
the CLI can print it as one line and exit non-zero, and library users can catch
the whole family. Code logs an error once, then re-raises with ``raise ... from``.
"""


class LearnTrackError(Exception):
    """Base class of every error LearnTrack raises on purpose."""


class ConfigError(LearnTrackError):
    """A setting is invalid; the message names the environment variable."""


class StackError(LearnTrackError):
    """A local server could not be installed, started, checked or stopped."""


class PortInUseError(StackError):
    """A port the local stack needs is already taken by another process."""


class ServerStartError(StackError):
    """A local server exited or did not answer in time; carries its log tail."""


class SinkError(LearnTrackError):
    """A write to a store failed."""


class RetryableSinkError(SinkError):
    """A write failed for a reason that may pass (server down, timeout): retry."""


class FatalSinkError(SinkError):
    """A write failed for a reason that retrying cannot fix (bad data, auth)."""
