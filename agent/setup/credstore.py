"""The service's secrets and state directory as it will see them, for loading the config
outside the service (setup, and check-config or status run by root)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from agent.setup.layout import CREDENTIAL_PREFIX, CREDENTIALS, CREDSTORE, Service, under_root


@contextlib.contextmanager
def credstore_view(root: Path = Path("/"), prefix: str = CREDENTIAL_PREFIX) -> Iterator[None]:
    """$CREDENTIALS_DIRECTORY as the service will see it, for loading the config outside the
    service: a temporary directory with <name> -> <root>/etc/credstore/<prefix><name> for
    each credential present (readable by root only, like the files); prefix is
    ghost-agent. (or an instance's ghost-agent.<site>.). Does nothing when
    $CREDENTIALS_DIRECTORY is already set (inside the service) or nothing is readable."""
    store = under_root(root, CREDSTORE)
    present = [name for name in CREDENTIALS
               if os.access(store / f"{prefix}{name}", os.R_OK)]
    if os.environ.get("CREDENTIALS_DIRECTORY") or not present:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="ghost-agent-credentials.") as view:
        for name in present:
            os.symlink(store / f"{prefix}{name}", Path(view) / name)
        os.environ["CREDENTIALS_DIRECTORY"] = view
        try:
            yield
        finally:
            os.environ.pop("CREDENTIALS_DIRECTORY", None)


@contextlib.contextmanager
def service_view(service: Service, root: Path = Path("/")) -> Iterator[None]:
    """While a config is loaded outside the service: its credentials (credstore_view) and
    $STATE_DIRECTORY as its StateDirectory= sets it, so that the default [agent] state_dir
    (config_load) is the one the service uses. Both are restored afterwards."""
    saved = os.environ.get("STATE_DIRECTORY")
    os.environ["STATE_DIRECTORY"] = str(service.state_dir)
    try:
        with credstore_view(root, service.credential_prefix):
            yield
    finally:
        if saved is None:
            os.environ.pop("STATE_DIRECTORY", None)
        else:
            os.environ["STATE_DIRECTORY"] = saved
