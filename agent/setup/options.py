"""The options of `ghost-agent setup`. Light on purpose: cli.py builds its parser from it
on every command, and a no-op `once` must not pay for the rest of the package."""

from __future__ import annotations

import argparse

from agent.setup.layout import DEFAULT_GHOST_GROUP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `ghost-agent setup` (cli.py adds the subcommand; --config is global)."""
    parser.add_argument("--instance", metavar="SITE", default=None,
                        help="set up the instance ghost-agent@SITE.service of a server with "
                             "several sites (user ghost-agent-SITE, state /var/lib/ghost-agent/"
                             "SITE, secrets /etc/credstore/ghost-agent.SITE.<name>); --config "
                             "then defaults to /etc/ghost-agent/SITE.toml")
    parser.add_argument("--dry-run", action="store_true",
                        help="print every file and command, write and run nothing")
    parser.add_argument("--root", metavar="DIR", default="/",
                        help="write under DIR instead of / and run nothing (packaging, tests)")
    parser.add_argument("--ghost-group", metavar="GROUP", default=None,
                        help="Ghost's group, which the agent joins to write into Ghost's "
                             "content directory (default: the one of an earlier setup, else "
                             f"{DEFAULT_GHOST_GROUP}, Ghost-CLI's); '' for none")
    parser.add_argument("--unit-only", action="store_true",
                        help="only the unit, ghost-agentctl and sysusers file (no config "
                             "needed); no polkit rule, drop-in or nginx snippet")
    parser.add_argument("--exec", dest="exec_path", metavar="PATH", default=None,
                        help="the installed ghost-agent for ExecStart= (pip installs; "
                             "default: this one)")
    parser.add_argument("--layout", choices=("auto", "deb", "pip"), default="auto",
                        help=argparse.SUPPRESS)
