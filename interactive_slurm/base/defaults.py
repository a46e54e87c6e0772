"""Defaults that more than one folder needs, each named once (imports nothing: the fast path
reads :data:`WARN_TIME_LEFT` without loading config.toml's parser)."""

from __future__ import annotations

#: Seconds the proxy waits for a queued session before giving up (``wait_timeout``); VS Code's
#: ``remote.SSH.connectTimeout`` is set to the same so it does not give up first.
WAIT_TIMEOUT = 1800
#: Warn on connect when the job has less than this many seconds left (``warn_time_left``).
WARN_TIME_LEFT = 1800
#: The container runtimes a session can use, in the order it looks for them on the node.
CONTAINER_RUNTIMES = ("enroot", "apptainer", "singularity", "charliecloud")
#: Seconds ``doctor --job`` waits for the short job it starts (the laptop's doctor waits this
#: long, and more, for the login node's).
DOCTOR_JOB_WAIT = 300
