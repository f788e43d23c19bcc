"""Ghost's own theme validator, gscan, run on a release before it goes live (#12).

Ghost refuses to serve a theme with fatal errors (GS005-TPL-ERR, an unclosed {{#if}};
GS020-INDEX-REQ, no index.hbs) and readers get a 400 or 500 page until the rollback. gscan
ships inside Ghost (`node_modules/gscan`), so the release is checked with the very rules the
running Ghost applies, before the switch: a release with fatal errors never goes live.

gscan's command line prints text only; a few lines of JavaScript (GSCAN_JS, run by node
through agent.proc) call its library and print JSON: each finding's code, rule, files and
whether it is fatal. Fatal findings fail the release; the others are kept as warnings.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import proc
from agent.errors import CommandError, DeployError, HostError
from agent.text import cut

TIMEOUT_SECONDS = 120.0  # 0.4-0.6 s for a theme measured; a huge one may take longer
MAX_FINDINGS = 20  # findings kept per kind in a deploy record
MAX_FILES = 5  # files named per finding

# Run as `node -e GSCAN_JS <gscan package dir> <theme dir>`: the options gscan's own CLI
# passes (the installed Ghost's default version, every level), then its formatted results.
GSCAN_JS = r"""
const [lib, theme] = process.argv.slice(-2);
const pick = (r) => ({code: String(r.code || ''), rule: String(r.rule || ''),
                      fatal: Boolean(r.fatal),
                      files: (r.failures || []).map((f) => String(f.ref || ''))});
Promise.resolve().then(() => {
    const gscan = require(lib);
    const options = {checkVersion: require(lib + '/lib/utils').versions.default,
                     onlyFatalErrors: false};
    return gscan.check(theme, options).then((result) => gscan.format(result, options));
}).then((out) => {
    process.stdout.write(JSON.stringify({version: String(out.checkedVersion || ''),
        errors: out.results.error.map(pick), warnings: out.results.warning.map(pick)}));
}).catch((err) => {
    process.stderr.write(String((err && err.message) || err).split('\n')[0]);
    process.exit(2);
});
"""

_TAG = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class Finding:
    """One gscan rule a theme breaks: code ("GS005-TPL-ERR"), rule (plain text), files."""

    code: str
    rule: str
    files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "rule": self.rule, "files": list(self.files)}

    def __str__(self) -> str:
        files = f" ({', '.join(self.files)})" if self.files else ""
        return f"{self.code} {self.rule}{files}"


@dataclass(frozen=True)
class Validation:
    """gscan's verdict on one release: fatal findings fail it, warnings do not."""

    checked_version: str  # the Ghost version gscan checked against, e.g. "5.x"
    fatal: tuple[Finding, ...] = ()
    warnings: tuple[Finding, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.fatal

    def to_dict(self) -> dict[str, Any]:
        """The deploy record's "validation": {"validator", "checked_version", "fatal":
        [{"code", "rule", "files"}], "warnings": [...]}, each list at most MAX_FINDINGS."""
        return {"validator": "gscan", "checked_version": self.checked_version,
                "fatal": [f.to_dict() for f in self.fatal[:MAX_FINDINGS]],
                "warnings": [f.to_dict() for f in self.warnings[:MAX_FINDINGS]]}

    def error(self) -> str:
        """One line for the record's error, Slack and the ci-cd files."""
        shown = "; ".join(str(f) for f in self.fatal[:3])
        more = f"; and {len(self.fatal) - 3} more" if len(self.fatal) > 3 else ""
        return f"gscan found fatal errors: {shown}{more}"


class ValidationFailed(DeployError):
    """The release has fatal errors: the commit's fault, quarantined like a failed build."""

    def __init__(self, validation: Validation):
        super().__init__(validation.error())
        self.validation = validation


@dataclass
class Validator:
    """gscan as found in a Ghost install, run with node on a release directory.

    package: gscan's package directory (…/node_modules/gscan); node: the node program;
    tmp_dir: TMPDIR for the run, never above a release (Ghost and gscan delete .git,
    node_modules and the like from a theme that lies under the temp dir).
    """

    package: Path
    node: str
    tmp_dir: Path
    timeout: float = TIMEOUT_SECONDS

    def check(self, release: Path) -> Validation:
        """gscan's verdict on `release`. Raises HostError when gscan cannot run or answers
        something that is not its JSON (not the release's fault: tried again later)."""
        if not release.is_dir():  # gscan says "valid" for a path that does not exist
            raise DeployError(f"validate: {release} is not a directory")
        self.tmp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            done = proc.run([self.node, "-e", GSCAN_JS, str(self.package), str(release)],
                            timeout=self.timeout, env={"TMPDIR": str(self.tmp_dir),
                                                       "NODE_ENV": "production"},
                            check=False)
        except CommandError as exc:
            raise HostError(f"cannot run gscan: {exc.message}") from None
        if done.returncode != 0:
            words = " ".join(proc.tail(done.stderr, 3).split())  # one line
            raise HostError(f"gscan exited with {done.returncode}: "
                            f"{cut(words, 300) or 'no message'}")
        try:
            return parse(str(done.stdout))
        except ValueError as exc:
            raise HostError(f"gscan answered something unexpected: {exc}") from None


def parse(text: str) -> Validation:
    """The JSON GSCAN_JS prints -> Validation. Raises ValueError for anything else."""
    data = json.loads(text)
    if not isinstance(data, dict) or not all(
            isinstance(data.get(k), list) for k in ("errors", "warnings")):
        raise ValueError("no errors and warnings lists")
    fatal, warnings = [], []
    for item in [*data["errors"], *data["warnings"]]:
        if not isinstance(item, dict):
            raise ValueError("a finding that is not an object")
        files = item.get("files") if isinstance(item.get("files"), list) else []
        finding = Finding(cut(str(item.get("code") or "?"), 60),
                          cut(_TAG.sub("", str(item.get("rule") or "")), 200),
                          tuple(cut(str(f), 120) for f in files[:MAX_FILES]))
        (fatal if item.get("fatal") is True else warnings).append(finding)
    return Validation(cut(str(data.get("version") or ""), 20), tuple(fatal), tuple(warnings))


def find_gscan(install_dir: Path | None, working_dir: Path | None) -> Path | None:
    """gscan's package directory in a Ghost install, or None.

    install_dir: Ghost's code ([ghost] install_dir, e.g. /var/www/ghost/current). Else the
    unit's WorkingDirectory: Ghost-CLI's site root holds `current` -> versions/<v>; a plain
    install runs from the code itself.
    """
    if install_dir is not None:
        places = [install_dir]
    elif working_dir is not None:
        places = [working_dir / "current", working_dir]
    else:
        places = []
    for place in places:
        package = place / "node_modules" / "gscan"
        if (package / "package.json").is_file():
            return package
    return None


def find_node() -> str | None:
    """The node program on PATH (Ghost-CLI installs it system-wide)."""
    return shutil.which("node")


def discover(install_dir: Path | None, validate: bool | None, unit: str,
             working_directory: Callable[[], Path | None], unit_node: Callable[[], str | None],
             tmp_dir: Path) -> tuple[Validator | None, str]:
    """The validator [ghost] asks for: (a Validator or None, one line for `status` saying
    where gscan is, or why validation is off or missing). validate: the key's value (None:
    when gscan is found); working_directory: asked only without install_dir; unit_node: the
    node the Ghost unit runs (gscan runs on it), else node from PATH."""
    if validate is False:
        return None, "off ([ghost] validate = false)"
    package = find_gscan(install_dir, None if install_dir else working_directory())
    node = (unit_node() or find_node()) if package else None
    if package is None:
        where = (f"[ghost] install_dir {install_dir}" if install_dir else
                 f"the WorkingDirectory of {unit}; set [ghost] install_dir")
        why = f"gscan was not found under {where}"
    elif node is None:
        why = "node is not on PATH"
    else:
        return Validator(package, node, tmp_dir), f"gscan at {package} (node {node})"
    return None, ("missing: " if validate else "off: ") + why
