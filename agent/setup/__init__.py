"""`ghost-agent setup`: install the agent as a least-privilege systemd service for one config.

Everything an operator would otherwise write by hand is rendered from agent.toml, the same
way every time (no dates, a fixed order), with a header saying where it came from:

* the polkit rule that lets the user ghost-agent `systemctl restart` exactly the [ghost] unit
  and nothing else (/etc/polkit-1/rules.d/10-ghost-agent.rules);
* the unit's drop-in with the paths the agent writes besides its own state and cache
  directories (ReadWritePaths=: [deploy] path's directory, [site] ci_cd_dir, a non-default
  state_dir or releases_dir, [fleet] out_dir), since ProtectSystem=strict makes the rest
  read-only (/etc/systemd/system/ghost-agent.service.d/50-setup.conf);
* the sysusers.d file: the system user ghost-agent, a member of systemd-journal (to read
  Ghost's journal) and of Ghost's group (to write into Ghost's content directory);
* the nginx snippet that serves the ci-cd files uncached (when /etc/nginx exists);
* for a pip install only (the Debian package ships these): the unit itself, with ExecStart=
  pointing at the installed `ghost-agent`, and `ghost-agentctl`, which runs a manual command
  (rollback, deploy --ref, hold, ...) the way the service runs.

Then it runs systemd-sysusers and `systemctl daemon-reload`. --dry-run prints all of it and
writes nothing; --root DIR writes under DIR and runs nothing (for packaging and tests).

One job per module, each using only those above it:

  layout.py     names and paths, what the sandbox hides, the directories a config writes
  templates.py  the texts (unit, drop-in, polkit rule, sysusers, nginx snippet, ctl script)
  host.py       what is read from the host before deciding (read-only)
  plan.py       pure: options + config + host facts -> files, commands, notes
  apply.py      print the plan, or write its files and run its commands (agent.proc)
  credstore.py  the service's secrets as it sees them, for loading the config outside it
  command.py    the command line: add_arguments, run_setup, main
"""

from agent.setup.apply import write_packaged_files
from agent.setup.command import add_arguments, main, run_setup
from agent.setup.credstore import credstore_view
from agent.setup.layout import CREDENTIALS, SetupError
from agent.setup.templates import (packaged_files, render_dropin, render_nginx_snippet,
                                   render_polkit_rule, render_unit)

__all__ = [
    "CREDENTIALS",
    "SetupError",
    "add_arguments",
    "credstore_view",
    "main",
    "packaged_files",
    "render_dropin",
    "render_nginx_snippet",
    "render_polkit_rule",
    "render_unit",
    "run_setup",
    "write_packaged_files",
]
