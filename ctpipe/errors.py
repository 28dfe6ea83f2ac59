"""Errors a user can act on. The CLI prints them without a traceback and exits non-zero."""


class CtpipeError(Exception):
    """Base class: the message alone must tell the user what is wrong and where."""

    exit_code = 2


class ConfigError(CtpipeError):
    """The configuration names an unknown key or a value of the wrong kind."""


class DataError(CtpipeError):
    """Input data could not be read: missing, empty, corrupt or unparseable."""


class ValidationFailed(CtpipeError):
    """The data broke hard schema rules; the message lists every violation."""


class RegistryError(CtpipeError):
    """MLflow refused an operation or holds something unexpected."""


class GateError(CtpipeError):
    """The gate could not compare the challenger with the champion: the run refuses."""


class IntegrityError(CtpipeError):
    """An artifact is not the one that was recorded (checksum or signature): never loaded."""
