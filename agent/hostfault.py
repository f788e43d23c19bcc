"""Telling a host fault (full disk, read-only or failing file system, too many open files,
a permission taken away) from a fault of the commit. A host fault is temporary: the commit is
not quarantined and is tried again on a later poll.

Sources: errno(3) names; git's and the shell tools' wording of the same errors (strerror).
"""

from __future__ import annotations

import errno

from agent.errors import HostError

HOST_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EMFILE, errno.ENFILE,
    errno.EACCES, errno.EPERM, errno.ENOMEM,
})
# strerror() of the errnos above that tools print in their stderr. EACCES/EPERM are left out:
# a build script's own "Permission denied" is the commit's fault as often as the host's.
HOST_PHRASES = (
    "No space left on device", "Disk quota exceeded", "Read-only file system",
    "Input/output error", "Too many open files", "Cannot allocate memory",
)


def is_host_errno(exc: BaseException) -> bool:
    """True for an OSError whose errno is a host fault."""
    return isinstance(exc, OSError) and exc.errno in HOST_ERRNOS


def phrase_in(text: str | None) -> str | None:
    """The host-fault wording found in a tool's output, e.g. "No space left on device"
    (in any case: git-lfs and npm print it in lower case)."""
    lowered = (text or "").lower()
    for phrase in HOST_PHRASES:
        if phrase.lower() in lowered:
            return phrase
    return None


def host_error(what: str, exc: OSError) -> HostError:
    """HostError("<what>: <strerror> (<path>)") for an OSError, without a traceback's noise."""
    name = errno.errorcode.get(exc.errno or 0, "")
    where = f" ({exc.filename})" if exc.filename else ""
    return HostError(f"{what}: {exc.strerror or exc}{where}" + (f" [{name}]" if name else ""))
