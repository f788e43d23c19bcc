"""What the site's ci-cd files (agent.publish) and the fleet's (agent.fleet_render) share:
the three file names, one style sheet, the HTML page around the content, the JSON text, and
one writer of the three files.

The pages are self-contained: inline CSS, no script, no external assets. Every value put
into them is escaped by the caller (agent.text.html_text).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from agent import failpoints
from agent.atomic import write_atomic
from agent.clock import aware
from agent.text import html_text

FILES = ("ci-cd.txt", "ci-cd.html", "ci-cd.json")

# The palette, the type and the badges of both pages; each page adds its own layout.
CSS = """
:root{color-scheme:light dark;--bg:#fff;--fg:#1d232a;--mute:#5f6b76;--line:#dde3e8;
--card:#f6f8fa;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--info:#0969da;--old:#8250df}
@media (prefers-color-scheme:dark){:root{--bg:#0f1419;--fg:#e6edf3;--mute:#9aa7b3;
--line:#2d3640;--card:#161c22;--ok:#3fb950;--warn:#d29922;--bad:#f85149;--info:#58a6ff;
--old:#a371f7}}
*{box-sizing:border-box}
body{margin:0;padding:1rem;background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:60rem;margin:0 auto}
h1{font-size:1.4rem;margin:0 0 .25rem}h2{font-size:1.1rem;margin:1.25rem 0 .5rem}
.meta,.mute{color:var(--mute);font-size:.9rem}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em}
a{color:var(--info)}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:999px;color:#fff;
font-size:.8rem;font-weight:600;background:var(--mute);white-space:nowrap}
.ok{color:var(--ok)}.warn{color:var(--warn)}.bad,.error{color:var(--bad)}
"""


def html_page(title: str, body: str, css: str) -> str:
    """A whole page: `title` is escaped here, `body` (the inside of <main>) is markup."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex">\n'
        f"<title>{html_text(title)}</title>\n<style>{CSS}{css}</style>\n</head>\n<body>\n"
        f"<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return aware(obj).isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def render_json(doc: dict) -> str:
    """ci-cd.json: indented, key order kept, UTF-8, a trailing newline."""
    return json.dumps(doc, indent=2, ensure_ascii=False, default=_json_default) + "\n"


def write_files(directory: Path, contents: dict[str, str], mode: int = 0o644, *,
                failpoint: str | None = None) -> list[Path]:
    """Write ci-cd.txt, ci-cd.html and ci-cd.json (in that order, from the rendered
    `contents`) atomically into `directory`; returns their paths.

    `directory` and missing parents are created with mode 0o755 (whatever the umask); an
    existing one keeps its mode. `failpoint` is hit once the first file is written (one
    file new, the others old).
    """
    directory = Path(directory)
    _ensure_dir(directory)
    written = []
    for name in FILES:
        path = directory / name
        write_atomic(path, contents[name], mode)
        written.append(path)
        if failpoint and len(written) == 1:
            failpoints.hit(failpoint)
    return written


def _ensure_dir(directory: Path) -> None:
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o755)
        except FileExistsError:
            continue
        os.chmod(d, 0o755)  # noqa: S103 - world-readable on purpose; mkdir's mode obeys umask
