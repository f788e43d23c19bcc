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

With --instance SITE, the same for one of several sites on a server: the instance
ghost-agent@SITE.service of the template unit, with its own user ghost-agent-SITE (polkit
tells callers apart by user only), /var/lib/ghost-agent/SITE, /etc/ghost-agent/SITE.toml,
/etc/credstore/ghost-agent.SITE.<name>, 10-ghost-agent-SITE.rules and drop-in (layout.Service).

Then it runs systemd-sysusers and `systemctl daemon-reload`. --dry-run prints all of it and
writes nothing; --root DIR writes under DIR and runs nothing (for packaging and tests).

One job per module, each using only those above it:

  layout.py     names and paths, what the sandbox hides, the directories a config writes
  templates.py  the texts (unit, drop-in, polkit rule, sysusers, nginx snippet, ctl script)
  host.py       what is read from the host before deciding (read-only)
  plan.py       pure: options + config + host facts -> files, commands, notes
  apply.py      print the plan, or write its files and run its commands (agent.proc)
  credstore.py  the service's secrets and state directory as it sees them, for loading the
                config outside it
  options.py    the command line options (light: the CLI parser imports it every time)
  command.py    run_setup and main
"""

import importlib
from typing import Any

# Names other modules use, and the module that holds each: imported on first use (PEP 562),
# so `import agent.setup.options` (the CLI's parser) does not load the whole package.
_EXPORTS = {
    "CREDENTIALS": "layout", "SetupError": "layout", "add_arguments": "options",
    "credstore_view": "credstore", "service_view": "credstore", "main": "command",
    "run_setup": "command",
    "packaged_files": "templates", "render_dropin": "templates",
    "render_nginx_snippet": "templates", "render_polkit_rule": "templates",
    "render_unit": "templates", "write_packaged_files": "apply",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'agent.setup' has no attribute {name!r}")
    return getattr(importlib.import_module(f"agent.setup.{_EXPORTS[name]}"), name)
