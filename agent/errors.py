"""The error tree. Each error carries the operator's one-line message and an exit code.

cli.py is the only place that turns these into exit statuses.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit status of every command (sysexits.h names where they exist)."""

    OK = 0
    FAILED = 1  # a deploy did not succeed (rolled back or failed); a report needs a look
    USAGE = 2  # a bad command line or revision range (argparse's own status)
    SOFTWARE = 70  # an unexpected internal error: one line, the traceback with --debug
    TEMPFAIL = 75  # temporary trouble: the remote, the lock, a host fault (full disk, ...)
    CONFIG = 78  # bad configuration: systemd's RestartPreventExitStatus= stops the loop


class AgentError(Exception):
    """A known failure with a one-line message for the operator."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(AgentError):
    """The config is invalid. Carries every problem found, one line each."""

    exit_code = ExitCode.CONFIG

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems) if self.problems else "invalid config")


class TemporaryError(AgentError):
    """Trouble that may pass by itself: the next cycle tries again."""

    exit_code = ExitCode.TEMPFAIL


class HostError(TemporaryError):
    """The host failed the agent (a full disk, a read-only or failing file system, too many
    open files, a permission taken away): not the commit's fault, so never quarantined; the
    same commit is tried again on a later poll."""


class RemoteError(TemporaryError):
    """The git remote could not be read or fetched."""


class LockBusy(TemporaryError):
    """Another run holds the state lock."""


class CommandError(AgentError):
    """A subprocess failed or timed out. The message holds the (redacted) stderr tail."""


class DeployError(AgentError):
    """A deploy step failed; the cycle decides whether to roll back."""


class UsageError(AgentError):
    """The command line asks for what cannot be done as asked (exit 2, as argparse's)."""

    exit_code = ExitCode.USAGE
