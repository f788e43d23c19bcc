"""Ghost installed the way users do, with Ghost-CLI, inside a guest (#12).

Ghost-CLI (`ghost-cli` from npm) refuses root and calls sudo. It installs a release's
dependencies with pnpm when the release carries a pnpm-lock.yaml (Ghost 6: `pnpm install --prod
--store-dir=<site>/.pnpm-store`), else with its own bundled yarn 1 (Ghost 5: `yarn install
--no-emoji --no-progress`, NODE_ENV=production). Either needs the npm registry. The guest
(tests/e2e/guest.py) has no network, so the registry part happens on the host, once, into a
*kit* cached under GHOST_AGENT_E2E_CACHE (/var/cache/ghost-agent-e2e):

* node 22 (ghost.ensure_node) for every major: Ghost-CLI 1.32.5 wants node ^22.13 || ^24 and
  does not even start on node 20 (its execa calls Set.prototype.union); Ghost 5.130 supports
  node 22 too. Then ghost-cli and pnpm (Ghost 6) or node-gyp (Ghost 5, see below) with
  `npm install --prefix <kit>/tools`;
* the Ghost release archive (`npm pack ghost@<v>`), for `ghost install --archive`;
* Ghost 6: a pnpm store holding every package of the release's lockfile, filled by a `pnpm
  install --prod` of that release on the host (so the store also carries the side-effects
  cache of the native builds, better-sqlite3 and re2, for this node);
* Ghost 5: a yarn offline mirror (`yarn-offline-mirror`: one tarball per package of the
  release's yarn.lock), filled by the very yarn install Ghost-CLI runs, with Ghost-CLI's own
  yarn, on the host. Yarn 1 fetches devDependencies even in production mode; the one that is
  not on the registry (mock-knex from a GitHub commit, unreachable here) gets the registry's
  tarball of the same name and version under the mirror name yarn looks for (it is never
  linked in production). Yarn has no build cache, so the native modules built on the host are
  kept as their own packages' prebuilt downloads look for them: sqlite3's prebuild-install
  tarball (for `npm_config_sqlite3_local_prebuilds`) and re2's install-from-cache artifact
  (for `RE2_DOWNLOAD_MIRROR`, a local path). node-gyp sits in the tools because yarn 1
  installs it globally, from the network, when it finds none on PATH;
* the registry's metadata documents for `ghost` and `ghost-cli`, which Ghost-CLI reads even
  with --archive (version resolution, its update check): served inside the guest by
  RegistryStandIn, the operator's ~/.npmrc pointing at it as at a registry mirror;
* Debian's sudo package (`apt-get download sudo`) when the machine has no sudo: it is
  installed inside the guest only (dpkg -i on the guest's throwaway overlay).

Inside the guest (install_with_ghost_cli): an operator user with passwordless sudo, the
site directory /var/www/<site> owned by it (a host directory bind-mounted on /var/www, not the
guest's tmpfs), then, as that user, `ghost install --archive ... --process systemd --db
sqlite3 --no-setup-nginx --no-setup-ssl --no-setup-mysql` with the package manager told to
work offline: pnpm with the store copied to <site>/.pnpm-store, or yarn through the
operator's ~/.yarnrc (the kit's offline mirror, `--install.offline true`, a yarn cache on
/var/www). Ghost-CLI itself then creates the `ghost` user, writes
/lib/systemd/system/ghost_<name>.service, runs `sudo systemctl daemon-reload` and starts Ghost
through systemd.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.ghost import (
    DEFAULT_CACHE_ROOT,
    GHOST_BUILDS,
    NPM_INSTALL_TIMEOUT,
    NPM_PACK_TIMEOUT,
    GhostBuildError,
    _file_lock,
    _node_headers_dir,
    _run_logged,
    _tail,
    call_in_netns,
    ensure_node,
    log,
    missing_build_packages,
)
from tests.e2e.guest import GUEST_PATH, Guest

GHOST_CLI_VERSION = "1.32.5"
PNPM_VERSION = "12.4.2"  # what Ghost 6.65 pins in packageManager (Ghost-CLI wants >= 11.10)
#: The node Ghost-CLI runs on (and so Ghost, from the unit it writes) when the Ghost build has
#: none of its own: Ghost-CLI 1.32.5 wants ^22.13.0 || ^24.0.0 and fails to start on node 20.
CLI_NODE_VERSION = GHOST_BUILDS["6"][1]
#: On PATH for yarn 1, which otherwise runs `yarn global add node-gyp` (network) before
#: building native modules.
NODE_GYP_VERSION = "11.4.2"
KIT_MARKER = ".ghost-agent-e2e-kit-complete"
OPERATOR = "deployer"  # the user who runs Ghost-CLI inside the guest (sudo, no password)
INSTALL_TIMEOUT = 1200
NPM_REGISTRY = "https://registry.npmjs.org/"
#: What Ghost-CLI's package-json asks for (abbreviated metadata).
NPM_ACCEPT = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
REGISTRY_DOCS = ("ghost", "ghost-cli")
REGISTRY_PORT = 4873  # the stand-in's port inside the guest (verdaccio's usual one)
#: Where yarn keeps its cache inside the guest: on the bound host directory, not the tmpfs
#: (yarn 1 unpacks every package of the lockfile there, devDependencies too: about 1.3 GB).
GUEST_YARN_CACHE = "/var/www/.yarn-cache"


@dataclass(frozen=True)
class GhostCliKit:
    """What `ghost install` needs from the registry, fetched on the host."""

    root: Path
    ghost_version: str
    node: Path  # bin/node of node 22: Ghost-CLI's node, and then Ghost's

    @property
    def archive(self) -> Path:
        return self.root / f"ghost-{self.ghost_version}.tgz"

    @property
    def store(self) -> Path:
        return self.root / "pnpm-store"

    @property
    def yarn_mirror(self) -> Path:
        return self.root / "yarn-mirror"

    @property
    def prebuilds(self) -> Path:
        """Native modules built on the host, as their prebuilt downloads (yarn kits)."""
        return self.root / "prebuilds"

    @property
    def installer(self) -> str:
        """The package manager Ghost-CLI runs for this release: "pnpm" or "yarn"."""
        return "yarn" if self.yarn_mirror.is_dir() else "pnpm"

    @property
    def tools_bin(self) -> Path:
        """node_modules/.bin with `ghost` and `pnpm`."""
        return self.root / "tools" / "node_modules" / ".bin"

    @property
    def sudo_debs(self) -> list[Path]:
        return sorted(self.root.glob("sudo_*.deb"))

    @property
    def path(self) -> str:
        """PATH for Ghost-CLI: node 22, then ghost and pnpm, then the system's."""
        return f"{self.node.parent}:{self.tools_bin}:{GUEST_PATH}"

    def info(self) -> dict:
        return json.loads((self.root / KIT_MARKER).read_text())


def _kit_env(node: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "npm_config_nodedir": str(_node_headers_dir(node)),
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
        "npm_config_loglevel": "warn",
        **(extra or {}),
    }


def ensure_ghost_cli_kit(cache_root: Path = DEFAULT_CACHE_ROOT, major: str = "6") -> GhostCliKit:
    """The kit for Ghost `major` (GHOST_BUILDS), built once under a lock, renamed into place
    when complete (marker file inside). Its node is the build's own (Ghost 6: 22) or, for a
    build on the machine's node (Ghost 5 on node 20), CLI_NODE_VERSION: Ghost-CLI 1.32.5 does
    not run on node 20, and what runs Ghost-CLI runs Ghost."""
    version, node_wanted, native = GHOST_BUILDS[major]
    node_wanted = node_wanted or CLI_NODE_VERSION
    cache_root = Path(cache_root)
    node = ensure_node(node_wanted, cache_root)
    key = f"ghost-cli-{GHOST_CLI_VERSION}-ghost-{version}-node{node_wanted.split('.')[0]}"
    final = cache_root / key
    kit = GhostCliKit(final, version, node)
    if (final / KIT_MARKER).is_file():
        if not all((final / "registry" / f"{n}.json").is_file() for n in REGISTRY_DOCS):
            _fetch_registry_docs(final / "registry")  # a kit made before the stand-in
        return kit
    missing = missing_build_packages(node)
    if missing:
        raise GhostBuildError(f"the Ghost-CLI kit needs: apt-get install -y {' '.join(missing)}")
    with _file_lock(cache_root / f".{key}.lock", 2 * NPM_INSTALL_TIMEOUT):
        if (final / KIT_MARKER).is_file():
            return kit
        if final.exists():
            shutil.rmtree(final)
        for stale in cache_root.glob(f".kit-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".kit-{key}-", dir=cache_root))
        try:
            _build_kit(work, node, version, native)
            work.chmod(0o755)
            work.rename(final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return kit


def _fetch_registry_docs(dest: Path) -> None:
    dest.mkdir(exist_ok=True)
    for name in REGISTRY_DOCS:
        req = urllib.request.Request(f"{NPM_REGISTRY}{name}", headers={"accept": NPM_ACCEPT})
        with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310 - fixed https URL
            body = resp.read()
        tmp = dest / f".{name}.json.tmp"
        tmp.write_bytes(body)
        tmp.rename(dest / f"{name}.json")


def _build_kit(work: Path, node: Path, version: str, native: str) -> None:
    started = time.monotonic()
    logfile = work / "kit.log"
    npm = shutil.which("npm")
    if not npm:
        raise GhostBuildError("npm is not installed")
    env = _kit_env(node)
    log(f"Ghost-CLI kit for Ghost {version} in {work}")
    archive = work / f"ghost-{version}.tgz"
    _run_logged([npm, "pack", f"ghost@{version}"], cwd=work, logfile=logfile,
                timeout=NPM_PACK_TIMEOUT, env=env)
    if not archive.is_file():
        raise GhostBuildError(f"npm pack did not produce ghost-{version}.tgz: {_tail(logfile)}")
    with tarfile.open(archive) as tf:  # Ghost-CLI's choice: pnpm when the lockfile is pnpm's
        uses_pnpm = "package/pnpm-lock.yaml" in tf.getnames()
    helper = f"pnpm@{PNPM_VERSION}" if uses_pnpm else f"node-gyp@{NODE_GYP_VERSION}"
    _run_logged([npm, "install", "--prefix", str(work / "tools"), "--no-audit", "--no-fund",
                 f"ghost-cli@{GHOST_CLI_VERSION}", helper],
                cwd=work, logfile=logfile, timeout=NPM_INSTALL_TIMEOUT, env=env)
    bin_dir = work / "tools" / "node_modules" / ".bin"
    populate = work / "populate"
    populate.mkdir()
    _run_logged(["tar", "-xzf", str(archive), "--no-same-owner"],
                cwd=populate, logfile=logfile, timeout=300)
    if uses_pnpm:
        details = _populate_pnpm_store(work, populate / "package", node, bin_dir, logfile)
    else:
        details = _populate_yarn_mirror(work, populate / "package", node, bin_dir, logfile,
                                        native)
    shutil.rmtree(populate)
    # Ghost-CLI asks the registry for the list of Ghost versions even with --archive, and for
    # its own latest version: keep both documents for the guest's registry stand-in.
    _fetch_registry_docs(work / "registry")
    if not shutil.which("sudo"):
        # Installed inside the guest only; the machine itself stays without sudo.
        _run_logged(["apt-get", "download", "sudo"], cwd=work, logfile=logfile, timeout=300)
    seconds = round(time.monotonic() - started, 1)
    (work / KIT_MARKER).write_text(json.dumps({
        "ghost": version, "ghost_cli": GHOST_CLI_VERSION, **details,
        "node": str(node), "kit_seconds": seconds,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }) + "\n")
    log(f"Ghost-CLI kit complete in {seconds} s")


def _populate_pnpm_store(work: Path, pkg: Path, node: Path, bin_dir: Path,
                         logfile: Path) -> dict:
    """Fill the store the way Ghost-CLI will use it: the same pnpm command in the release."""
    pnpm_env = _kit_env(node, {"PATH": f"{node.parent}:{bin_dir}:{os.environ.get('PATH', '')}",
                               "NODE_ENV": "production", "COREPACK_DEFAULT_TO_LATEST": "0"})
    _run_logged([str(bin_dir / "pnpm"), "install", "--prod", f"--store-dir={work / 'pnpm-store'}",
                 "--reporter=append-only"],
                cwd=pkg, logfile=logfile, timeout=NPM_INSTALL_TIMEOUT, env=pnpm_env)
    # Ghost's own native module must load (pnpm does not hoist re2: it is Ghost's deps' dep).
    _run_logged([str(node), "-e", "require('better-sqlite3')"], cwd=pkg,
                logfile=logfile, timeout=60, env=pnpm_env)
    return {"installer": "pnpm", "pnpm": PNPM_VERSION}


def cli_yarn(tools: Path) -> Path:
    """The yarn Ghost-CLI runs: execa's preferLocal from ghost-cli/lib/utils finds the first
    node_modules/.bin/yarn above it (its own dependency, yarn 1)."""
    cli = tools / "node_modules" / "ghost-cli"
    for bin_dir in (cli / "node_modules" / ".bin", tools / "node_modules" / ".bin"):
        if (bin_dir / "yarn").exists():
            return bin_dir / "yarn"
    raise GhostBuildError(f"no yarn next to Ghost-CLI in {tools}")


def _populate_yarn_mirror(work: Path, pkg: Path, node: Path, bin_dir: Path, logfile: Path,
                          native: str) -> dict:
    """Fill an offline mirror with Ghost-CLI's own yarn command in the release, keep the
    native builds as prebuilt downloads, drop the rest (node_modules, yarn's cache)."""
    mirror = work / "yarn-mirror"
    mirror.mkdir()
    stand_ins = _dev_stand_ins(pkg, mirror, work, logfile, _kit_env(node))
    home = work / "yarn-home"  # yarn's rc, npm's cache, yarn's global folder: all throwaway
    home.mkdir()
    (home / ".yarnrc").write_text(
        f'yarn-offline-mirror "{mirror}"\ncache-folder "{work / "yarn-cache"}"\n'
        f'global-folder "{home / "global"}"\nprefix "{home / "global"}"\n')
    yarn_env = _kit_env(node, {"PATH": f"{node.parent}:{bin_dir}:{os.environ.get('PATH', '')}",
                               "HOME": str(home), "NODE_ENV": "production",
                               "YARN_IGNORE_PATH": "true"})
    yarn = cli_yarn(work / "tools")
    _run_logged([str(yarn), "install", "--no-emoji", "--no-progress"],
                cwd=pkg, logfile=logfile, timeout=NPM_INSTALL_TIMEOUT, env=yarn_env)
    _run_logged([str(node), "-e", native], cwd=pkg, logfile=logfile, timeout=60, env=yarn_env)
    prebuilt = _save_prebuilds(pkg, node, work / "prebuilds")
    yarn_version = json.loads((yarn.resolve().parent.parent / "package.json").read_text())
    shutil.rmtree(work / "yarn-cache", ignore_errors=True)
    shutil.rmtree(home)
    return {"installer": "yarn", "yarn": yarn_version["version"], "node_gyp": NODE_GYP_VERSION,
            "mirror_tarballs": len(list(mirror.iterdir())), "dev_stand_ins": stand_ins,
            "prebuilds": prebuilt}


def _from_registry(url: str) -> bool:
    return urllib.parse.urlparse(url).hostname in ("registry.yarnpkg.com", "registry.npmjs.org")


def _dev_stand_ins(pkg: Path, mirror: Path, work: Path, logfile: Path,
                   env: dict[str, str]) -> list[str]:
    """Yarn 1 fetches devDependencies even in production mode (it links only the others).
    A devDependency the lockfile resolves outside the registry (Ghost 5: mock-knex from a
    GitHub commit, and GitHub is out of reach here) gets the registry's tarball of the same
    name and version, under the file name yarn looks for in the mirror (the URL's basename).
    A production dependency outside the registry is left alone (yarn then fails loudly)."""
    dev = json.loads((pkg / "package.json").read_text()).get("devDependencies", {})
    done = []
    for entry in (pkg / "yarn.lock").read_text().split("\n\n"):
        lines = [line for line in entry.splitlines() if line and not line.startswith("#")]
        if not lines:
            continue
        fields = dict(line.strip().split(" ", 1) for line in lines[1:] if " " in line.strip())
        resolved = fields.get("resolved", "").strip('"')
        version = fields.get("version", "").strip('"')
        if not resolved or _from_registry(resolved):
            continue
        for pattern in (p.strip().strip('"') for p in lines[0].rstrip(":").split(",")):
            name, _, spec = pattern.rpartition("@")
            if name and dev.get(name) == spec:
                got = Path(tempfile.mkdtemp(prefix=".pack-", dir=work))
                _run_logged(["npm", "pack", f"{name}@{version}"], cwd=got, logfile=logfile,
                            timeout=NPM_PACK_TIMEOUT, env=env)
                [tarball] = got.glob("*.tgz")
                target = mirror / Path(urllib.parse.urlparse(resolved).path).name
                tarball.rename(target)
                shutil.rmtree(got)
                done.append(f"{pattern} -> {name}@{version} from the registry as {target.name}")
                break
    return done


#: The file name the package's own prebuild-install looks for, as its install script runs
#: it (`prebuild-install -r napi`), computed by that prebuild-install. Not to be guessed:
#: Ghost 5's napi-build-utils 1.0.2 compares N-API versions as strings, so on node 22
#: (N-API "10") it finds no usable version and the name carries the node ABI instead.
_PREBUILD_NAME_JS = """
const dir = process.argv[1];
process.chdir(dir);
process.argv = [process.argv[0], 'prebuild-install', '-r', 'napi'];
const from = m => require(require.resolve(m, {paths: [dir]}));
const pkg = require(dir + '/package.json');
const rc = from('prebuild-install/rc')(pkg);
const url = from('prebuild-install/util').getDownloadUrl(Object.assign({}, rc, {pkg}));
console.log(require('path').basename(url));
"""


def _prebuild_install_name(package: Path, node: Path) -> str:
    out = subprocess.run([str(node), "-e", _PREBUILD_NAME_JS, str(package)],
                         capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0 or not out.stdout.strip().endswith(".tar.gz"):
        raise GhostBuildError(f"prebuild-install's file name for {package.name}: "
                              f"{out.stdout}{out.stderr}")
    return out.stdout.strip()


def _save_prebuilds(pkg: Path, node: Path, dest: Path) -> list[str]:
    """The native modules yarn built on the host, where their install scripts look before
    compiling: sqlite3's prebuild-install takes `<npm_config_sqlite3_local_prebuilds>/<the
    basename of its download URL>` (_prebuild_install_name); re2's install-from-cache reads
    `<RE2_DOWNLOAD_MIRROR>/<v>/<platform>-<arch>-<abi>.gz` (a local path is read as a file;
    RE2_DOWNLOAD_SKIP_PATH drops GitHub's /<owner>/<repo>/releases/download)."""
    probe = subprocess.run(
        [str(node), "-p", "[process.versions.modules, process.platform, process.arch].join(' ')"],
        capture_output=True, text=True, timeout=30, check=True)
    abi, platform, arch = probe.stdout.split()
    dest.mkdir()
    saved = []
    sqlite3 = pkg / "node_modules" / "sqlite3"
    binary = sqlite3 / "build" / "Release" / "node_sqlite3.node"
    if binary.is_file():
        name = _prebuild_install_name(sqlite3, node)
        with tarfile.open(dest / name, "w:gz", format=tarfile.USTAR_FORMAT) as tf:
            tf.add(binary, arcname="build/Release/node_sqlite3.node")
        saved.append(name)
    re2 = pkg / "node_modules" / "re2"
    binary = re2 / "build" / "Release" / "re2.node"
    if binary.is_file():
        version = json.loads((re2 / "package.json").read_text())["version"]
        target = dest / "re2" / version / f"{platform}-{arch}-{abi}.gz"
        target.parent.mkdir(parents=True)
        target.write_bytes(gzip.compress(binary.read_bytes()))
        saved.append(str(target.relative_to(dest)))
    return saved


# --------------------------------------------------------------------------- inside the guest


def guest_binds(kit: GhostCliKit) -> list[Path]:
    """Host directories the guest needs for install_with_ghost_cli (besides the www dir)."""
    return [kit.root, kit.node.parent.parent]


def ensure_guest_sudo(guest: Guest, kit: GhostCliKit) -> str:
    """sudo inside the guest: the machine's, or Debian's package installed in the guest's
    overlay. Returns how."""
    if guest.run(["sh", "-c", "command -v sudo"], check=False).returncode == 0:
        return "present"
    debs = kit.sudo_debs
    if not debs:
        raise GhostBuildError("no sudo in the guest and no sudo .deb in the kit")
    guest.run(["dpkg", "-i", *map(str, debs)], timeout=300,
              env={"DEBIAN_FRONTEND": "noninteractive"})
    return "dpkg -i " + " ".join(d.name for d in debs)


def add_operator(guest: Guest, user: str = OPERATOR) -> None:
    """A login user with passwordless sudo, as Ghost's install guide asks for."""
    guest.run(["useradd", "--create-home", "--shell", "/bin/bash", user])
    guest.write_file(f"/etc/sudoers.d/{user}", f"{user} ALL=(ALL) NOPASSWD:ALL\n", mode=0o440)
    guest.run(["visudo", "-c"])


def as_user(guest: Guest, user: str, argv: list[str], *, cwd: str, env: dict[str, str],
            timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    """argv as `user` in `cwd`, with exactly env (plus HOME/USER/LOGNAME/LANG)."""
    home = f"/home/{user}"
    full = {"HOME": home, "USER": user, "LOGNAME": user, "LANG": "C.UTF-8", "TERM": "dumb",
            "PATH": GUEST_PATH, **env}
    script = f"cd {shlex.quote(cwd)} && exec " + " ".join(map(shlex.quote, argv))
    return guest.run(["runuser", "-u", user, "--", "env", "-i",
                      *(f"{k}={v}" for k, v in full.items()), "/bin/sh", "-c", script],
                     timeout=timeout, check=check)


@dataclass
class CliInstall:
    site_dir: str
    name: str  # Ghost-CLI's instance name: the url's host with dashes
    unit: str
    output: str
    seconds: float  # `ghost install` itself
    copy_seconds: float  # copying the kit's pnpm store into <site>/.pnpm-store (yarn: 0)
    installer: str = "pnpm"  # the package manager Ghost-CLI ran: "pnpm" or "yarn"
    #: (yarn) Native modules compiled inside the guest by node-gyp (their build/Makefile is
    #: there); with the kit's prebuilds, none.
    compiled: tuple[str, ...] = ()


def install_with_ghost_cli(guest: Guest, kit: GhostCliKit, www: Path, *, site: str = "dev1",
                           url: str = "https://dev1.example.com", user: str = OPERATOR,
                           timeout: float = INSTALL_TIMEOUT,
                           prebuilt: bool = True) -> CliInstall:
    """`ghost install` of kit's release at /var/www/<site> inside the guest, as `user`, with
    systemd and sqlite3 and nothing else (no nginx, ssl, mysql); Ghost is started by it.

    www: a host directory (world-traversable, bound into the guest) mounted on /var/www.
    prebuilt: (yarn kits) let sqlite3 and re2 take the kit's host builds as their prebuilt
    downloads; False makes node-gyp compile them inside the guest, as with no mirror.
    """
    # The registry Ghost-CLI asks for metadata: the stand-in (RegistryStandIn), as a site
    # behind a registry mirror would configure it.
    as_user(guest, user, ["sh", "-c", f"echo registry=http://127.0.0.1:{REGISTRY_PORT}/ "
                          ">> ~/.npmrc"], cwd="/", env={}, timeout=30)
    guest.run(["mkdir", "-p", "/var/www"])
    guest.run(["mount", "--bind", str(www), "/var/www"])
    site_dir = f"/var/www/{site}"
    guest.run(["install", "-d", "-o", user, "-g", user, "-m", "0775", site_dir])
    env = {"PATH": kit.path, "npm_config_update_notifier": "false"}
    t_copy = time.monotonic()
    if kit.installer == "pnpm":
        # The registry's part, done on the host: the store goes where Ghost-CLI points pnpm.
        as_user(guest, user, ["cp", "-r", str(kit.store), f"{site_dir}/.pnpm-store"],
                cwd=site_dir, env={}, timeout=600)
        # No registry inside the guest: pnpm installs from the store only, native modules
        # included (the store's side-effects cache holds their builds for this node). pnpm
        # reads npm_config_* / pnpm_config_* variables; Ghost-CLI passes the environment on.
        env.update({"npm_config_offline": "true", "pnpm_config_offline": "true"})
    else:
        env.update(_yarn_offline(guest, kit, user, prebuilt=prebuilt))
    copy_seconds = time.monotonic() - t_copy
    argv = ["ghost", "install", "--archive", str(kit.archive), "--no-prompt", "--no-color",
            "--no-stack", "--url", url, "--db", "sqlite3",
            "--dbpath", f"{site_dir}/content/data/ghost.db", "--process", "systemd",
            "--no-setup-nginx", "--no-setup-ssl", "--no-setup-mysql", "--start"]
    t0 = time.monotonic()
    r = as_user(guest, user, argv, cwd=site_dir, env=env, timeout=timeout, check=False)
    seconds = time.monotonic() - t0
    output = r.stdout + r.stderr
    if r.returncode != 0:
        debug = as_user(guest, user, ["sh", "-c", "cat ghost-cli-debug-*.log 2>/dev/null | "
                                      "tail -c 6000"], cwd=site_dir, env={}, timeout=30,
                        check=False).stdout
        raise GhostBuildError(f"ghost install failed (exit {r.returncode}) after {seconds:.0f} s:"
                              f"\n{output[-8000:]}\n--- debug log ---\n{debug}")
    name = url.split("://", 1)[1].split("/")[0].split(":")[0].replace(".", "-")
    compiled: tuple[str, ...] = ()
    if kit.installer == "yarn":  # (pnpm restores built packages whole, build/ included)
        modules = f"{site_dir}/current/node_modules"
        compiled = tuple(m for m in ("sqlite3", "re2") if guest.run(
            ["test", "-f", f"{modules}/{m}/build/Makefile"], check=False).returncode == 0)
    return CliInstall(site_dir, name, f"ghost_{name}.service", output, seconds, copy_seconds,
                      kit.installer, compiled)


def _yarn_offline(guest: Guest, kit: GhostCliKit, user: str, *, prebuilt: bool,
                  ) -> dict[str, str]:
    """What makes Ghost-CLI's `yarn install` work with no network: the operator's ~/.yarnrc
    names the kit's offline mirror and asks for offline installs (as a site behind a mirror
    would set it up), with yarn's cache on /var/www. Returns the environment for Ghost-CLI,
    which hands it on to yarn and yarn to the packages' install scripts."""
    guest.run(["install", "-d", "-o", user, "-g", user, "-m", "0755", GUEST_YARN_CACHE])
    rc = f"/home/{user}/.yarnrc"
    guest.write_file(rc, f'yarn-offline-mirror "{kit.yarn_mirror}"\n'
                         f'cache-folder "{GUEST_YARN_CACHE}"\n'
                         "--install.offline true\n")
    guest.run(["chown", f"{user}:{user}", rc])
    # A native module that compiles needs node's headers: the kit's node carries them.
    env = {"npm_config_nodedir": str(_node_headers_dir(kit.node))}
    if prebuilt:
        env.update({"npm_config_sqlite3_local_prebuilds": str(kit.prebuilds),
                    "RE2_DOWNLOAD_MIRROR": str(kit.prebuilds / "re2"),
                    "RE2_DOWNLOAD_SKIP_PATH": "1"})
    return env


class RegistryStandIn:
    """The registry's metadata documents Ghost-CLI reads (REGISTRY_DOCS), served on
    127.0.0.1:REGISTRY_PORT inside the guest's network by a thread of this process, the way
    a site behind a registry mirror is configured (`registry=` in the operator's ~/.npmrc).
    Packages themselves never come from it: pnpm installs offline from the store."""

    def __init__(self, kit: GhostCliKit, netns: Path) -> None:
        self.kit = kit
        self.netns = netns
        self.requests: list[str] = []
        self.server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{REGISTRY_PORT}/"

    def start(self) -> RegistryStandIn:
        docs = self.kit.root / "registry"
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                seen.append(self.path)
                name = self.path.lstrip("/").split("?", 1)[0]
                doc = docs / f"{name}.json"
                if name not in REGISTRY_DOCS or not doc.is_file():
                    self.send_error(404)
                    return
                body = doc.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        def serve() -> http.server.ThreadingHTTPServer:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", REGISTRY_PORT), Handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            return server

        self.server = call_in_netns(self.netns, serve)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> RegistryStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
