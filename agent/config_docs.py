"""agent.toml.example, written from the declarations in agent/config.py:

    python -m agent.config_docs > agent.toml.example

Each table's docstring comes first, then each key with its value (the default, else the
declared example) and its doc. Optional tables and keys (no default) are commented out; a
secret X is followed by X_file. tests/test_config_docs.py fails when the file differs.
"""

from __future__ import annotations

import inspect
import json
import sys
import textwrap
from typing import Any

from agent.config import DEFAULT_TABLES, REQUIRED_TABLES, TABLES, declared_keys
from agent.config_values import REQUIRED

HEADER = """\
# ghost-deploy-agent configuration: /etc/ghost-agent/agent.toml
# (or --config PATH, or $GHOST_AGENT_CONFIG). Written by `python -m agent.config_docs`.
#
# Every key is shown. Keys marked "default" may be left out; optional tables and keys are
# commented out. Unknown keys and tables are errors, and `ghost-agent check-config` lists
# every problem at once. This example is for a dev host that follows the branch dev1, with
# Ghost installed by Ghost-CLI in /var/www/ghost.
#
# Secrets are best kept out of this file: each secret key X may instead be X_file (a file
# holding it) or a systemd credential, read from $CREDENTIALS_DIRECTORY (LoadCredential=).
"""
AFTER = {"checks": '#\n# [[checks]]\n# name = "public"\n# url = "{public_url}/"\n'}
COLUMN = 46  # where a key's doc starts
WIDTH = 100


def render_example() -> str:
    parts = [HEADER]
    for name, cls in TABLES.items():
        shown = name in REQUIRED_TABLES or name in DEFAULT_TABLES
        lines = [f"# {line}".rstrip() for line in inspect.cleandoc(cls.__doc__).splitlines()]
        header = f"[[{name}]]" if name == "checks" else f"[{name}]"
        lines.append(header if shown else f"# {header}")
        for key_name, key in declared_keys(cls):
            has_default = key.default not in (REQUIRED, None)
            lines += _line(key_name, key.default if has_default else key.example,
                           f"default; {key.doc}" if has_default else key.doc,
                           shown and key.default is not None)
            if key.credential:
                lines += _line(f"{key_name}_file", f"/etc/ghost-agent/{key.credential}",
                               f"instead of {key_name}: a file holding it; or the systemd "
                               f"credential {key.credential}", False)
        parts.append("\n".join(lines) + "\n" + AFTER.get(name, ""))
    return "\n".join(parts)


def _line(name: str, value: Any, doc: str, shown: bool) -> list[str]:
    """`name = value` (commented out unless shown), its doc from COLUMN on."""
    setting = ("" if shown else "# ") + f"{name} = {json.dumps(value, ensure_ascii=False)}"
    first = setting.ljust(COLUMN) if len(setting) < COLUMN else setting + "  "
    return textwrap.wrap(doc, WIDTH, initial_indent=f"{first}# ",
                         subsequent_indent=f"{'':{COLUMN}}# ", break_on_hyphens=False,
                         break_long_words=False)


if __name__ == "__main__":
    sys.stdout.write(render_example())
