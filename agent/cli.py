"""Command line: argparse, logging, and the mapping of known errors to exit codes.

This is the only place that exits. Known errors print one line; --debug adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__
from agent.config import config_path, load_config
from agent.setup.options import add_arguments as add_setup_arguments
from agent.errors import AgentError, ConfigError, ExitCode, UsageError
from agent.hostfault import host_error, is_host_errno
from agent.redact import redact
from agent.text import one_line

log = logging.getLogger("agent")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ghost-agent",
        description="Pull-based deploy agent for Ghost sites.",
    )
    parser.add_argument("--version", action="version", version=f"ghost-agent {__version__}")
    # --config and --debug work before or after the command: `ghost-agent once --debug`.
    for where, default in ((parser, None), (common := argparse.ArgumentParser(add_help=False),
                                            argparse.SUPPRESS)):
        where.add_argument("--config", metavar="PATH", default=default,
                           help="agent.toml (default: $GHOST_AGENT_CONFIG, "
                                "else /etc/ghost-agent/agent.toml)")
        where.add_argument("--debug", action="store_true", default=default or False,
                           help="verbose logs and tracebacks")
    # The commands of one site may name an instance ghost-agent@SITE instead of a config.
    of_site = argparse.ArgumentParser(add_help=False)
    of_site.add_argument("--instance", metavar="SITE", type=_instance_name,
                         help="the site of ghost-agent@SITE: its config (default "
                              "/etc/ghost-agent/SITE.toml), state and credentials")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, site: bool = True) -> argparse.ArgumentParser:
        parents = [common, of_site] if site else [common]
        return sub.add_parser(name, help=text, description=text, parents=parents)

    command("run", "the service: poll, deploy, report (systemd Type=notify)")
    command("once", "one cycle: look at the remote, deploy if a target is due")
    command("check-config", "validate the config and print every problem")
    status = command("status", "what is live, what is pending and why")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    deploy = command("deploy", "deploy now, outside the window (manual override)")
    deploy.add_argument("--ref", metavar="BRANCH_OR_SHA",
                        help="a branch or commit (default: the flag's target)")
    command("rollback", "make the previous release live again")
    hold = command("hold", "pause automatic deploys on this host (deploy --ref still works)")
    hold.add_argument("--reason", help="why, shown in status, the ci-cd files and Slack")
    command("release", "resume automatic deploys after a hold")
    commits = command("check-commits",
                      "fail when a commit of RANGE names no card (for the site repo's CI)",
                      site=False)
    commits.add_argument("range", metavar="RANGE", help="e.g. origin/main..HEAD")
    commits.add_argument("--repo", default=".", help="the site repository (default: .)")
    commits.add_argument("--pattern", default=None,
                         help="card ID regex (default: [cards] pattern of --config if given, "
                              "else [A-Z][0-9]{3,})")
    fleet = command("fleet", "one report of every site's ci-cd.json (e.g. for the morning after)",
                    site=False)
    fleet.add_argument("--sites", metavar="FILE", help="site URLs, one a line ([fleet] sites_file)")
    fleet.add_argument("--out", metavar="DIR", help="write ci-cd.txt/.html/.json here "
                                                     "([fleet] out_dir)")
    fleet.add_argument("--processes", metavar="N", type=_processes,
                       help="processes that read the sites, 1-64 ([fleet] processes; default: "
                            "one per CPU, one per 250 sites at most)")
    fleet.add_argument("--slack", action="store_true", help="post the summary to [slack]")
    fleet.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo = command("demo", "the main job in a throwaway sandbox (no root, no network)",
                   site=False)
    demo.add_argument("--keep", action="store_true", help="keep the sandbox directory")
    add_setup_arguments(command("setup", "install the service for this config: unit, polkit "
                                         "rule, sandbox paths, user (as root)", site=False))
    return parser


def _instance_name(text: str) -> str:
    """--instance's value: a site name that can be an instance (argparse: exit 2 if not)."""
    from agent.setup.layout import Service, SetupError

    try:
        return Service.instance(text).site or text
    except SetupError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--instance {text!r}: ")
                                         .removeprefix(f"--instance {text}: ")) from None


#: What changes an instance's state: run as root, its files would become root's and the
#: instance could no longer write them (ghost-agentctl runs them as the instance's user).
_WRITES_STATE = frozenset({"once", "deploy", "rollback", "hold", "release", "run"})


def setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        # journald adds its own timestamps; <N> prefixes carry the priority.
        handler.setFormatter(_JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # These log full URLs (a webhook URL is a secret) and chatter at debug level.
    for noisy in ("slack_sdk", "urllib3", "git", "schedule"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _JournalFormatter(logging.Formatter):
    PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self.PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def main(argv: Sequence[str] | None = None) -> int:
    """The console script. Returns the exit status (see errors.py); never a bare traceback:
    a known error is one line, anything else is one line and 70 (the traceback with --debug)."""
    try:
        args = build_parser().parse_args(argv)  # --help and usage errors print here
    except BrokenPipeError:
        return _reader_went_away()
    setup_logging(args.debug)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return ExitCode.CONFIG
    except AgentError as exc:
        if args.debug:
            log.exception("ghost-agent %s", args.command)
        print(f"ghost-agent {args.command}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_went_away()
    except OSError as exc:
        if not is_host_errno(exc):
            return _unexpected(args, exc)
        # A full disk or a read-only file system met outside the steps that name it: still
        # the host's fault, still temporary.
        print(f"ghost-agent {args.command}: {host_error('host fault', exc).message}",
              file=sys.stderr)
        return ExitCode.TEMPFAIL
    except Exception as exc:  # noqa: BLE001 - the one catch-all for the unexpected
        return _unexpected(args, exc)


def _unexpected(args: argparse.Namespace, exc: Exception) -> int:
    if args.debug:
        log.exception("ghost-agent %s", args.command)
    detail = redact(one_line(f"{type(exc).__name__}: {exc}"))[:300]
    print(f"ghost-agent {args.command}: unexpected error ({detail}); rerun with --debug "
          "for the traceback", file=sys.stderr)
    return ExitCode.SOFTWARE


def _reader_went_away() -> int:
    """`ghost-agent status | head -1`: the reader closed the pipe. Stop quietly, as git and
    coreutils do; stdout goes to /dev/null so the interpreter's own flush at exit is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return ExitCode.OK


def _check_commits(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agent.check_commits import check
    from agent.config import CardsConfig

    pattern = args.pattern
    if pattern is None:
        pattern = load_config(args.config).cards.pattern if args.config else CardsConfig.pattern
    lines, uncarded = check(Path(args.repo), args.range, pattern)
    for line in lines:
        print(line)
    if uncarded:
        print(f"{len(uncarded)} commit(s) without a card ID: name the card (e.g. B321) in each "
              "commit message", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


def _processes(value: str) -> int:
    """--processes: a whole number from 1 to 64 (argparse reports anything else in one line)."""
    if not (value.isascii() and value.isdecimal()) or not 1 <= int(value) <= 64:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 64, not {value!r}")
    return int(value)


def _fleet(args: argparse.Namespace) -> int:
    """Works with a config ([fleet], [slack]) or, on a machine without one, with flags only."""
    import dataclasses
    from pathlib import Path

    from agent import clock, notifiers
    from agent.config import FleetConfig
    from agent.fleet_job import needs_a_look, run_report
    from agent.fleet_render import render_txt

    path = config_path(args.config)
    named = args.config or os.environ.get("GHOST_AGENT_CONFIG")
    # A host's own agent.toml (root:ghost-agent 640) is not for the fleet report's user:
    # unnamed and unreadable, it is not this command's config.
    config = load_config(path) if named or os.access(path, os.R_OK) else None
    fleet = (config.fleet if config and config.fleet else None) or FleetConfig()
    if args.sites:
        fleet = dataclasses.replace(fleet, sites=(), sites_file=Path(args.sites).resolve())
    if args.out:
        fleet = dataclasses.replace(fleet, out_dir=Path(args.out).resolve())
    if args.processes:
        fleet = dataclasses.replace(fleet, processes=args.processes)
    if args.slack:
        if not (config and config.slack):
            raise ConfigError([f"{path}: --slack needs a [slack] table"])
        fleet = dataclasses.replace(fleet, slack=True)
    if not fleet.sites and not fleet.sites_file:
        raise ConfigError(["fleet: no sites: give --sites FILE or [fleet] sites / sites_file"])
    notifier = notifiers.from_config(config) if config else None
    summary = run_report(fleet, now=clock.now(), notifier=notifier, report_url=fleet.report_url)
    print(json.dumps(summary, indent=2) + "\n" if args.json else render_txt(summary), end="")
    return ExitCode.FAILED if needs_a_look(summary) else ExitCode.OK


def _load_as_the_service_would(args: argparse.Namespace):
    """(config path, Config) of the command's site as its service sees them: run by root
    outside the service (check-config, status), the secrets the unit passes as systemd
    credentials come from /etc/credstore. Raises ConfigError (78)."""
    if getattr(args, "instance", None) is not None:
        return _load_instance(args, args.instance)
    path = config_path(args.config)
    if os.geteuid() != 0 or os.environ.get("CREDENTIALS_DIRECTORY"):
        return path, load_config(path)
    from agent.setup import credstore_view

    with credstore_view():
        return path, load_config(path)


def _load_instance(args: argparse.Namespace, site: str):
    """As _load_as_the_service_would, for --instance SITE: the instance's config (default
    /etc/ghost-agent/SITE.toml), credentials and state directory (its StateDirectory=, the
    default [agent] state_dir). Raises UsageError (2) inside a service (its credentials are
    another site's) and as root for a command that writes the state; ConfigError (78)."""
    from agent.setup import service_view
    from agent.setup.layout import Service

    if os.environ.get("CREDENTIALS_DIRECTORY"):
        raise UsageError(f"--instance {site}: not inside a service, which has its own site's "
                         "config and credentials (ghost-agentctl --instance SITE COMMAND)")
    if os.geteuid() == 0 and args.command in _WRITES_STATE:
        raise UsageError(f"{args.command} --instance {site} as root would leave root's files in "
                         f"the instance's state: sudo ghost-agentctl --instance {site} "
                         f"{args.command}")
    service = Service.instance(site)
    path = Path(args.config or service.default_config)
    with service_view(service):
        return path, load_config(path)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from agent.demo.run import run_demo

        return run_demo(keep=args.keep)

    if args.command == "check-commits":
        return _check_commits(args)
    if args.command == "fleet":
        return _fleet(args)

    if args.command == "setup":
        from agent.setup import run_setup

        return run_setup(args)

    path, config = _load_as_the_service_would(args)
    if args.command in ("check-config", "run"):  # said once, not on every `once` from cron
        for warning in config.warnings:
            log.warning("%s", warning)
    if args.command == "check-config":
        from agent.state import StateError, StateStore
        from agent.status import reload_line

        print(f"{path}: ok")
        if config.ghost.admin_api_key:  # what the key did the last time it was tried
            try:
                state = StateStore(config.agent.state_dir).load()  # read-only, as status
            except StateError:
                state = None  # the config is still fine: say so
            print(f"reload: {reload_line(config, state)}")
        return ExitCode.OK
    if args.command == "status":
        from agent.status import render_status, status_dict

        info = status_dict(config)
        print(json.dumps(info, indent=2) if args.json else render_status(info))
        return ExitCode.OK
    if args.command == "run":
        from agent.daemon import run_service

        return run_service(config, config_path=path)

    from agent.cycle import Agent

    agent = Agent.from_config(config)
    if args.command == "once":
        outcome = agent.once()
        # Run from cron there is no service loop: offer what waits in the spool (bounded).
        agent.notifier.deliver(config.slack.timeout_seconds if config.slack else 0)
    elif args.command == "deploy":
        outcome = agent.deploy_ref(args.ref)
    elif args.command == "rollback":
        outcome = agent.rollback()
    elif args.command == "hold":
        outcome = agent.hold(args.reason, os.environ.get("SUDO_USER") or os.environ.get("USER"))
    elif args.command == "release":
        outcome = agent.release()
    else:  # pragma: no cover - argparse restricts the choices
        raise AssertionError(args.command)
    print(outcome.message)
    return outcome.exit_code if outcome.exit_code == ExitCode.OK else ExitCode.FAILED
