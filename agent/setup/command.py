"""`ghost-agent setup` on the command line: its options, and run_setup, which reads the
config and the host, makes the plan and applies it."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from agent.config import config_path, load_config
from agent.setup import host
from agent.setup.apply import apply
from agent.setup.credstore import service_view
from agent.setup.layout import DEFAULT_GHOST_GROUP, SINGLE, Service, SetupError
from agent.setup.options import add_arguments  # noqa: F401 - re-exported
from agent.setup.plan import Options, make_plan

_GROUP_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,30}\$?")


def run_setup(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`ghost-agent setup` with the options of add_arguments (and --config); returns
    ExitCode.OK. Raises ConfigError (78) for a bad config, SetupError (1)."""
    out = out or sys.stdout
    root = Path(args.root).absolute()
    if not root.is_dir():
        raise SetupError(f"--root {args.root}: not a directory")
    site = getattr(args, "instance", None)
    service = SINGLE if site is None else Service.instance(site)
    group = args.ghost_group
    if group is None:
        group = host.group_from_sysusers(root, service) or DEFAULT_GHOST_GROUP
    if group and not _GROUP_NAME.fullmatch(group):
        raise SetupError(f"--ghost-group {group!r}: not a group name")
    # Only the live root's groups are this host's; a dry run warns instead of stopping.
    if group and root == Path("/") and not args.unit_only and not host.group_exists(group):
        message = (f"--ghost-group {group}: no such group (Ghost-CLI's is `ghost`); "
                   "name Ghost's group, or --ghost-group '' for none")
        if not args.dry_run:
            raise SetupError(message)
        out.write(f"warning: {message}\n")
    options = Options(root=root, dry_run=args.dry_run, ghost_group=group,
                      unit_only=args.unit_only, layout=args.layout, service=service)
    config = config_file = None
    if not args.unit_only:
        named = getattr(args, "config", None)
        # an instance's own config unless --config names one ($GHOST_AGENT_CONFIG is one site's)
        chosen = config_path(named) if service.site is None else Path(named or
                                                                      service.default_config)
        config_file = Path(os.path.normpath(chosen.absolute()))
        # [slack] may get its webhook from the credstore; state_dir defaults to the unit's
        with service_view(service, root):
            config = load_config(config_file)
    facts = host.look(root, args.exec_path, config, service)
    plan = make_plan(options, config, config_file, facts)
    return apply(plan, options, out)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m agent.setup [options]`: the same as `ghost-agent setup [options]`, through
    the one main (agent.cli), so errors and exit statuses are the same."""
    from agent.cli import main as cli_main  # agent.cli imports this package

    return cli_main(["setup", *(sys.argv[1:] if argv is None else argv)])
