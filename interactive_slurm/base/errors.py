"""The one error hierarchy of interactive-slurm, caught once in ``cli.main()``.

::

    InteractiveSlurmError            every error a user may see ("error: ..." on stderr, exit 1)
     ├── ConfigError                 config.toml or a profile: names the file, table, key, value
     ├── CommandError                a subprocess failed or could not run (quotes its stderr)
     │    └── SlurmError             sbatch/squeue/scancel said no, or printed nonsense
     │         └── SubmitRefused     sbatch refused a request it can never run (names the key)
     ├── SessionError                the compute-node side could not start or serve sshd
     ├── AppError                    a web app in a job could not start, answer or stop (names
     │                               the app, its log and what to do)
     ├── ProxyError                  the proxy could not reach a session
     │    ├── JobEndedError          the job ended (FAILED, CANCELLED, ...) before it was ready
     │    ├── SessionUnreachable     the job runs but its session never answered (firewall?)
     │    └── Aborted                the user gave up: a signal, or ssh closed stdin (exit 130)
     ├── EndpointError               an endpoint record is unreadable, unsafe or forged
     │    └── CorruptRecordError     a record of ours that does not parse: treated as stale
     ├── UnsafePathError             a file or folder the tool trusts is not yours alone
     │                               (StrictModes): names the path and the fix
     ├── FileSystemError             an OSError on the tool's own files (full disk, no
     │                               permission): names the path
     ├── LockTimeout                 a lock stayed taken longer than its bound
     ├── UpdateError                 the updater could not fetch, build, install or switch
     └── UsageError                  a command-line value is invalid
"""

from __future__ import annotations


class InteractiveSlurmError(Exception):
    """Base class: the message is shown to the user as ``error: <message>``."""

    exit_code = 1


class ConfigError(InteractiveSlurmError):
    """A configuration or profile value is missing or invalid."""


class CommandError(InteractiveSlurmError):
    """A subprocess could not be run, timed out, or exited non-zero."""

    def __init__(self, message: str, *, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class SlurmError(CommandError):
    """Slurm refused a request or printed output we could not make sense of."""


class SubmitRefused(SlurmError):
    """sbatch refused the request for good (a partition, account or size it will never take):
    ``reason`` is Slurm's own words, ``key`` the profile key(s) that decide it."""

    def __init__(self, reason: str, key: str, *, stderr: str = "") -> None:
        super().__init__(f"Slurm refused it: {reason}", returncode=1, stderr=stderr)
        self.reason, self.key = reason, key


class SessionError(InteractiveSlurmError):
    """The compute-node session could not start or keep its sshd."""


class AppError(InteractiveSlurmError):
    """A web app in a session's job (``open``, ``remote app``) could not start, answer or stop."""


class ProxyError(InteractiveSlurmError):
    """The proxy could not connect the user to a session."""


class LockTimeout(InteractiveSlurmError):
    """Another process held a lock for longer than the caller would wait."""


class JobEndedError(ProxyError):
    """The job left the queue (FAILED, CANCELLED, TIMEOUT, ...) before its sshd was ready."""


class SessionUnreachable(ProxyError):
    """The job runs and published its record, but its session never proved itself."""


class Aborted(ProxyError):
    """The user gave up while waiting (a signal, or the ssh client closed our stdin)."""

    exit_code = 130


class EndpointError(InteractiveSlurmError):
    """An endpoint record is malformed, or its file fails the ownership/mode checks."""


class CorruptRecordError(EndpointError):
    """A record that passed the ownership checks but does not parse (bad JSON, fields, job id).

    Records are written atomically, so this is never a half-written one: readers treat it as
    stale (the proxy removes it and goes on).
    """


class UnsafePathError(InteractiveSlurmError):
    """A file or folder the tool trusts is owned by someone else or writable by others."""


class FileSystemError(InteractiveSlurmError):
    """Reading or writing one of the tool's own files failed (no space, no permission, ...)."""


class UpdateError(InteractiveSlurmError):
    """An update, rollback or check failed; ``current`` is as it was."""


class UsageError(InteractiveSlurmError):
    """A command-line value is invalid."""

    exit_code = 2
