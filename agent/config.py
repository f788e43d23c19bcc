"""agent.toml: every key declared once, here, as a field of a frozen dataclass.

A key's declaration (agent.config_values.key) gives its parse function (type, shape, range),
its default as written in TOML, a one-line doc and, where needed, an example value or the
systemd credential of a secret. From it come the loading (agent/config_load.py), with its
problem lines `<file>: [table] key = <value shown safely>: <what is wrong>`, and the key
documentation in agent.toml.example (agent/config_docs.py).

To add a key: declare it in its dataclass below (a new table also goes into TABLES), run
`python -m agent.config_docs > agent.toml.example`, and add a rule to config_load.py's phase
two only if the key's value depends on another key's.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

from agent import config_values as v
from agent.config_values import key
from agent.window import host_zone

DEFAULT_CONFIG_PATH = Path("/etc/ghost-agent/agent.toml")
CONFIG_ENV = "GHOST_AGENT_CONFIG"


@dataclass(frozen=True)
class SiteConfig:
    """The Ghost site this host serves, and the branch it follows."""

    name: str = key(v.label, "label in logs, Slack and the ci-cd files", example="dev1")
    flag: str = key(v.flag, 'exact branch name; or NAME* for the release branches of NAME, e.g. '
                    '"staging1*" follows staging1-1.3.22, staging1/1.3.23, ...', example="dev1")
    public_url: str = key(v.base_url, "checked after every deploy",
                          example="https://dev1.website.com")
    local_url: str = key(v.base_url, "Ghost's own listener", default="http://127.0.0.1:2368",
                         required_in_code=True)
    content_dir: Path = key(v.abs_path, "Ghost's content directory",
                            example="/var/www/ghost/content")
    ci_cd_dir: Path = key(v.abs_path, "default <content_dir>/files: where ci-cd.txt/.html/.json "
                          "are written", default=None, required_in_code=True,
                          example="/var/www/ghost/content/files")
    ci_cd_url: str | None = key(v.base_url, "default <public_url>/content/files: where people "
                                "read them (Slack links here); with the nginx snippet: the "
                                "public_url itself", default=None,
                                example="https://dev1.website.com/content/files")

    @property
    def release_prefix(self) -> str | None:
        """The NAME of a NAME* flag ("staging1" for "staging1*"); None for an exact flag."""
        return self.flag[:-1] if self.flag.endswith("*") else None


@dataclass(frozen=True)
class AgentSection:
    """The agent's own files."""

    state_dir: Path = key(v.abs_path, "state, lock and deploy history (an instance "
                                      "ghost-agent@SITE: /var/lib/ghost-agent/SITE)",
                          default="/var/lib/ghost-agent")
    history: int = key(v.whole(1, 100000), "deploy records kept", default=500)


@dataclass(frozen=True)
class GitConfig:
    """The site's repository."""

    remote: str = key(v.remote, "any URL git accepts: ssh, https, a path",
                      example="git@github.com:acme/site.git")
    poll_seconds: float = key(v.seconds, "how often the remote is looked at", default=10)
    timeout_seconds: float = key(v.seconds, "limit for one git command", default=60)
    ssh_key: Path | None = key(v.abs_path, "optional; private key for an ssh remote",
                               default=None, example="/etc/ghost-agent/deploy_key")
    credentials: str | None = key(v.nonempty, 'optional, https remotes: "user:token" (or a bare '
                                  "token), put into the remote URL", default=None,
                                  credential="git-credentials", example="deploy:TOKEN")


@dataclass(frozen=True)
class DeployConfig:
    """How a commit becomes the live theme."""

    path: Path = key(v.abs_path, "the live path: a symlink to the active release",
                     example="/var/www/ghost/content/themes/acme")
    releases_dir: Path = key(v.abs_path, "default <state_dir>/releases", default=None,
                             required_in_code=True, example="/var/lib/ghost-agent/releases")
    keep: int = key(v.whole(2, 1000), "releases kept for rollback (2 to 1000)", default=5)
    build: tuple[tuple[str, ...], ...] = key(
        v.argv_lists, "commands run in the new release before it goes live, no shell, e.g. "
        '[["npm", "ci", "--omit=dev"], ["npm", "run", "build"]]', default=[])
    build_timeout_seconds: float = key(v.seconds, "limit for each build command", default=600)
    routes: str | None = key(v.routes_file, "optional; the release's routes.yaml, uploaded to "
                             "Ghost when it changes (needs [ghost] admin_api_key: an "
                             "Administrator's staff access token)", default=None,
                             example="routes.yaml")
    redirects: str | None = key(v.redirects_file, "optional; the release's redirects.yaml or "
                                ".json, uploaded the same way", default=None,
                                example="redirects.yaml")


@dataclass(frozen=True)
class GhostConfig:
    """Ghost: its systemd unit, its theme validator and its Admin API."""

    unit: str = key(v.unit, "`systemctl restart UNIT` after a switch or rollback",
                    example="ghost_dev1-website-com.service")
    restart_timeout_seconds: float = key(v.seconds, "limit for the restart", default=90)
    verify_seconds: float = key(v.seconds, "time the checks get to pass after it", default=60)
    journal_lines: int = key(v.whole(0, 10000), "journal lines kept when a deploy fails",
                             default=30)
    install_dir: Path | None = key(v.abs_path, "Ghost's code, where gscan is found; default: "
                                   "from the unit's WorkingDirectory (Ghost-CLI's layout)",
                                   default=None, example="/var/www/ghost/current")
    validate: bool | None = key(v.boolean, "gscan checks each release before the switch; "
                                "default: when gscan is found", default=None, example=True)
    admin_api_key: str | None = key(v.admin_api_key, 'optional "id:secret": themes go live by '
                                    "an Admin API activation instead of a restart (an "
                                    "integration's key; an Administrator's staff access token "
                                    "also uploads routes and redirects)", default=None,
                                    credential="ghost-admin-api-key",
                                    example="6489c4b5a1b2c3d4e5f60718:" + "0" * 32)
    reload: str = key(v.reload_mode, '"auto": activate through the Admin API where it can, '
                      'restart when package.json\'s config changes; "restart": always restart',
                      default="auto")


@dataclass(frozen=True)
class WindowConfig:
    """Optional deploy window. Without it a change deploys as soon as it is seen (right for a
    dev host). On prod, deploy only between 03:30 and 04:30 Paris time:"""

    start: datetime.time = key(v.time_of_day, "HH:MM", example="03:30")
    minutes: int = key(v.whole(1, 1440), "length of the window, 1..1440", example=60)
    timezone: str | None = key(v.timezone, "IANA name; default: the host's zone", default=None,
                               example="Europe/Paris")
    spread_minutes: int = key(v.whole(0, 1440), "hosts start up to this much later, by a hash "
                              "of the hostname (shorter than minutes)", default=0)
    # The zone, resolved once here (the zone files are not read again on every decision).
    zone: datetime.tzinfo | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.zone is None:
            zone = zoneinfo.ZoneInfo(self.timezone) if self.timezone else host_zone()
            object.__setattr__(self, "zone", zone)


@dataclass(frozen=True)
class CheckConfig:
    """Optional checks after each deploy (all must pass within verify_seconds, else rollback).
    Without any, the default is GET {local_url}/ and GET {public_url}/ answering 200."""

    name: str = key(v.label, "a name for reports", example="home")
    url: str = key(v.url_template, "{local_url} and {public_url} are replaced",
                   example="{local_url}/")
    status: int = key(v.whole(100, 599), "the HTTP status expected", default=200)
    contains: str | None = key(v.contains, "optional; text the body must contain", default=None,
                               example="Acme")
    timeout_seconds: float = key(v.seconds, "limit for one request", default=5)


@dataclass(frozen=True)
class SlackConfig:
    """Optional Slack reports: a webhook, or a bot token with a channel."""

    webhook_url: str | None = key(v.slack_webhook, "an incoming webhook", default=None,
                                  credential="slack-webhook-url",
                                  example="https://hooks.slack.com/services/T000/B000/XXXX")
    token: str | None = key(v.slack_token, "instead of webhook_url: a bot token", default=None,
                            credential="slack-token", example="xoxb-...")
    channel: str | None = key(v.nonempty, "required with token", default=None, example="#ci-cd")
    timeout_seconds: float = key(v.seconds, "limit for one request", default=5)
    api_url: str = key(v.slack_api_url, "another one only for a stand-in in tests",
                       default="https://slack.com/api/")


@dataclass(frozen=True)
class TrelloConfig:
    """Optional Trello: comment on each card a release carries, and add a label."""

    # v.key in this class: the field named "key" hides the function in its body
    key: str = v.key(v.word, "the API key", credential="trello-key", example="0123abcd")
    token: str = v.key(v.word, "the API token", credential="trello-token", example="0123abcd")
    board: str = v.key(v.word, "the board's id or short link (trello.com/b/AbCd1234)",
                       example="AbCd1234")
    label: str | None = v.key(v.nonempty, "optional; a label name added to each card",
                              default=None, example="deployed")
    timeout_seconds: float = v.key(v.seconds, "limit for one request", default=10)
    api_url: str = v.key(v.base_url, "another one only for a stand-in in tests",
                         default="https://api.trello.com/1")


@dataclass(frozen=True)
class CardsConfig:
    """Trello card IDs in commit messages (B321): named in reports, optionally required."""

    pattern: str = key(v.regex, "card IDs in commit messages, e.g. B321",
                       default="[A-Z][0-9]{3,}")
    board_url: str | None = key(v.link, "optional; Slack and ci-cd.html link cards here",
                                default=None, example="https://trello.com/b/AbCd1234")
    require: bool = key(v.boolean, "true refuses to deploy a release that has a commit without "
                        "a card ID", default=False)


@dataclass(frozen=True)
class PublishConfig:
    """What the public ci-cd files may show besides the deploy history."""

    journal_tail: bool = key(v.boolean, "Ghost's journal tail of a failed deploy (request "
                             "paths, stack traces, readers' addresses) stays out of the public "
                             "ci-cd files; true publishes it there, with e-mail and IP "
                             "addresses masked", default=False)


@dataclass(frozen=True)
class PromotionConfig:
    """Optional promotion: deploy version V only once the canary sites have run V healthily
    for bake_minutes."""

    canary_urls: tuple[str, ...] = key(v.url_list(required=True), "each site's public URL (its "
                                       "ci-cd.json is read) or a .json URL",
                                       example=["https://prod-asterix.website.com"])
    bake_minutes: int = key(v.whole(0, 7 * 1440), "how long V must have run there", default=60)
    healthy_share: float = key(v.share, "share of canary sites that must be healthy, > 0 and "
                               "<= 1", default=1.0)
    timeout_seconds: float = key(v.seconds, "limit for reading one site", default=10)


@dataclass(frozen=True)
class FleetConfig:
    """Optional `ghost-agent fleet`: one report of every site's ci-cd.json."""

    sites: tuple[str, ...] = key(v.url_list(required=False), "site public URLs or ci-cd.json "
                                 "URLs", default=[])
    sites_file: Path | None = key(v.abs_path, "optional; one URL per line (# comments allowed)",
                                  default=None, example="/etc/ghost-agent/sites")
    out_dir: Path | None = key(v.abs_path, "optional; where the fleet's ci-cd.txt/.html/.json "
                               "go", default=None, example="/var/www/fleet")
    at: datetime.time | None = key(v.time_of_day, "optional; run daily at this local time "
                                   "inside `ghost-agent run`", default=None, example="05:00")
    timezone: str | None = key(v.timezone, "IANA name for at; default: the host's zone",
                               default=None, example="Europe/Paris")
    timeout_seconds: float = key(v.seconds, "limit for reading one site", default=10)
    processes: int = key(v.whole(0, 64), "processes that read the sites; 0: one per CPU, "
                         "one per 250 sites at most", default=0)
    slack: bool = key(v.boolean, "post one summary to [slack]", default=False)
    report_url: str | None = key(v.base_url, "optional; where the report is public (Slack "
                                 "links to it)", default=None, example="https://fleet.website.com")


@dataclass(frozen=True, kw_only=True)
class WebhookConfig:
    """Optional webhook, served by `ghost-agent run`: a signed POST from the forge starts a
    poll at once (GitHub, Bitbucket, Gitea, Forgejo, GitLab); nginx proxies the public path."""

    listen_host: str = key(v.listen, "host:port the listener binds", default="127.0.0.1:9302",
                           name="listen", into=("listen_host", "listen_port"))
    listen_port: int  # from listen
    path: str = key(v.url_path, "the URL path it answers", default="/ghost-agent/webhook")
    secret: str = key(v.webhook_secret, "the shared secret, 16 characters or more",
                      credential="webhook-secret", example="change-me-to-32-random-characters")
    rate_per_minute: int = key(v.whole(1, 6000),
                               "signed calls a minute that make a poll; more get 429",
                               default=60)


@dataclass(frozen=True)
class Config:
    path: Path
    site: SiteConfig
    agent: AgentSection
    git: GitConfig
    deploy: DeployConfig
    ghost: GhostConfig
    window: WindowConfig | None
    checks: tuple[CheckConfig, ...]
    slack: SlackConfig | None
    cards: CardsConfig
    trello: TrelloConfig | None = None
    promotion: PromotionConfig | None = None
    fleet: FleetConfig | None = None
    warnings: tuple[str, ...] = ()  # not errors, but an operator should hear of them
    publish: PublishConfig = PublishConfig()
    webhook: WebhookConfig | None = None


# Every table, in the order agent.toml.example shows them. [[checks]] is an array of tables.
TABLES: dict[str, type] = {
    "site": SiteConfig, "agent": AgentSection, "git": GitConfig, "deploy": DeployConfig,
    "ghost": GhostConfig, "window": WindowConfig, "checks": CheckConfig, "slack": SlackConfig,
    "trello": TrelloConfig, "cards": CardsConfig, "publish": PublishConfig,
    "promotion": PromotionConfig, "fleet": FleetConfig, "webhook": WebhookConfig,
}
REQUIRED_TABLES = ("site", "git", "deploy", "ghost")
DEFAULT_TABLES = ("agent", "cards", "publish")  # absent: every key takes its default
# The others are optional: the feature is off (None) when the table is absent.


def declared_keys(cls: type) -> list[tuple[str, v.Key]]:
    """(TOML name, declaration) of each key of a table's dataclass, in order."""
    return [(f.metadata["key"].name or f.name, f.metadata["key"])
            for f in dataclasses.fields(cls) if "key" in f.metadata]


def config_path(cli_value: str | None) -> Path:
    """--config, else $GHOST_AGENT_CONFIG, else /etc/ghost-agent/agent.toml."""
    return Path(cli_value or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load_config(path: Path | str) -> Config:
    """Read and validate agent.toml (UTF-8; a leading byte order mark is allowed).

    Returns the Config (its .warnings: lines an operator should see, not errors). Raises
    ConfigError (exit code 78) whose .problems hold one line per problem, each starting
    with the file's path; whatever the file holds, no other exception escapes.
    """
    from agent.config_load import load  # it builds the dataclasses above

    return load(Path(path))
