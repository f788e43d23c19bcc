"""Secrets in agent.toml: from the file itself, from *_file keys, or from systemd credentials;
never echoed; a world-readable file holding one is warned about."""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest

import agent.redact as redact_module
from agent.config import load_config
from agent.errors import ConfigError
from tests.configs import MINIMAL_CONFIG



@pytest.fixture
def short_dir():
    """A directory with a short path: the error lines shorten long values, and these tests
    compare whole lines (tmp_path is longer under pytest-xdist)."""
    path = Path(tempfile.mkdtemp(prefix="gas-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write(tmp_path, extra: str = "", remote: str = "https://git.example.com/acme/site.git",
          mode: int = 0o600):
    path = tmp_path / "agent.toml"
    text = MINIMAL_CONFIG.replace("git@github.com:acme/site.git", remote)
    path.write_text(text + textwrap.dedent(extra))
    path.chmod(mode)
    return path


def test_slack_webhook_from_a_file(tmp_path):
    secret = tmp_path / "webhook"
    secret.write_text("https://hooks.slack.com/services/T0/B0/FILECANARY1\n")
    config = load_config(write(tmp_path, f'[slack]\nwebhook_url_file = "{secret}"\n'))
    assert config.slack.webhook_url == "https://hooks.slack.com/services/T0/B0/FILECANARY1"
    shown = redact_module.redact("posting to https://hooks.slack.com/services/T0/B0/FILECANARY1")
    assert "FILECANARY1" not in shown
    assert config.warnings == ()


def test_slack_token_from_systemd_credentials(tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "slack-token").write_text("xoxb-CREDCANARY2")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = load_config(write(tmp_path, '[slack]\nchannel = "#ci-cd"\n'))
    assert config.slack.token == "xoxb-CREDCANARY2"
    assert "CREDCANARY2" not in redact_module.redact("token xoxb-CREDCANARY2")


def test_trello_key_and_token_from_credentials_and_files(tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "trello-key").write_text("KEYCANARY3")
    token = tmp_path / "trello-token"
    token.write_text("TOKENCANARY4\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = load_config(write(tmp_path, f'[trello]\ntoken_file = "{token}"\nboard = "AbCd"\n'))
    assert (config.trello.key, config.trello.token, config.trello.board) == \
        ("KEYCANARY3", "TOKENCANARY4", "AbCd")


def test_trello_without_a_key_is_a_clear_problem(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, '[trello]\ntoken = "t"\nboard = "AbCd"\n'))
    assert any("[trello] key: missing" in p and "trello-key" in p for p in err.value.problems)


def test_git_credentials_file_goes_into_an_https_remote_and_is_redacted(tmp_path):
    cred = tmp_path / "git-credentials"
    cred.write_text("deploy:GITCANARY5\n")
    config = load_config(write(tmp_path, ""))
    assert "@" not in config.git.remote
    path = write(tmp_path, "")
    path.write_text(path.read_text().replace(
        'remote = "https://git.example.com/acme/site.git"',
        f'remote = "https://git.example.com/acme/site.git"\ncredentials_file = "{cred}"'))
    config = load_config(path)
    assert config.git.remote == "https://deploy:GITCANARY5@git.example.com/acme/site.git"
    assert "GITCANARY5" not in redact_module.redact(config.git.remote)


def test_git_credentials_with_an_ssh_remote_is_a_problem(tmp_path):
    cred = tmp_path / "git-credentials"
    cred.write_text("tok")
    path = write(tmp_path, "", remote="git@github.com:acme/site.git")
    path.write_text(path.read_text().replace(
        'remote = "git@github.com:acme/site.git"',
        f'remote = "git@github.com:acme/site.git"\ncredentials_file = "{cred}"'))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert any("credentials: only for an http(s) remote" in p for p in err.value.problems)


def test_secret_and_secret_file_together_is_a_problem(tmp_path):
    secret = tmp_path / "webhook"
    secret.write_text("https://hooks.slack.com/services/T0/B0/X")
    path = write(tmp_path, '[slack]\n'
                 'webhook_url = "https://hooks.slack.com/services/T0/B0/INLINECANARY6"\n'
                 f'webhook_url_file = "{secret}"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = "\n".join(err.value.problems)
    assert "not both" in text
    assert "INLINECANARY6" not in text


def test_unreadable_or_empty_secret_file_is_a_problem(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f'[slack]\nwebhook_url_file = "{tmp_path / "nope"}"\n'))
    assert any("cannot read the secret" in p for p in err.value.problems)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f'[slack]\nwebhook_url_file = "{empty}"\n'))
    assert any("the file is empty" in p for p in err.value.problems)


def test_world_readable_file_with_a_secret_is_warned_about(tmp_path):
    inline = '[slack]\nwebhook_url = "https://hooks.slack.com/services/T0/B0/WARNCANARY7"\n'
    config = load_config(write(tmp_path, inline, mode=0o644))
    [warning] = config.warnings
    assert "[slack] webhook_url holds a secret" in warning and "644" in warning
    assert "WARNCANARY7" not in warning
    assert load_config(write(tmp_path, inline, mode=0o640)).warnings == ()
    remote = "https://deploy:REMOTECANARY8@git.example.com/site.git"
    config = load_config(write(tmp_path, "", remote=remote, mode=0o644))
    assert "[git] remote" in config.warnings[0]
    path = write(tmp_path, "", mode=0o644)
    path.write_text(path.read_text().replace(
        'remote = "https://git.example.com/acme/site.git"',
        'remote = "https://git.example.com/acme/site.git"\ncredentials = "deploy:CANARY13"'))
    [warning] = load_config(path).warnings
    assert "[git] credentials holds a secret" in warning and "CANARY13" not in warning


def test_check_config_prints_the_warning_and_still_passes(tmp_path):
    import subprocess
    import sys

    inline = '[slack]\nwebhook_url = "https://hooks.slack.com/services/T0/B0/WARNCANARY9"\n'
    path = write(tmp_path, inline, mode=0o644)
    result = subprocess.run([sys.executable, "-m", "agent", "check-config", "--config", str(path)],
                            capture_output=True, text=True, timeout=60, check=False,
                            env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert result.returncode == 0
    assert "warning" in result.stderr
    assert "WARNCANARY9" not in result.stderr + result.stdout


def test_an_unreadable_credentials_directory_is_a_config_problem(tmp_path, monkeypatch):
    """As the service user, $CREDENTIALS_DIRECTORY may not be readable: a clear line (78),
    not a traceback that systemd would restart in a loop."""
    from pathlib import Path

    creds = tmp_path / "creds"
    creds.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    real_exists = Path.exists

    def exists(self):
        if self.parent == creds:
            raise PermissionError(13, "Permission denied")
        return real_exists(self)

    monkeypatch.setattr(Path, "exists", exists)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, '[slack]\nchannel = "#x"\n'))
    assert any("cannot read the systemd credential" in p and "Permission denied" in p
               for p in err.value.problems)


@pytest.mark.parametrize(
    ("key", "value"),
    [("token_file", "xoxb-PASTEDCANARY10"), ("webhook_url_file", "hooks.slack.com/PASTEDCANARY10"),
     ("token_file", ["xoxb-PASTEDCANARY10"])],
)
def test_a_secret_pasted_into_a_file_key_is_not_echoed(tmp_path, key, value):
    """token_file = "xoxb-…" is a token in the wrong key: masked like the token itself."""
    shown = f'"{value}"' if isinstance(value, str) else f'["{value[0]}"]'
    extra = '\nchannel = "#c"' if key == "token_file" else ""
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f"[slack]\n{key} = {shown}{extra}\n"))
    [line] = err.value.problems
    assert f'[slack] {key} = "***": ' in line
    assert "PASTEDCANARY10" not in line


def test_a_secret_file_that_is_not_a_regular_file_is_a_problem(tmp_path):
    """A FIFO would block the agent at start, a device would flood it: neither is read."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for source in (fifo, tmp_path, "/dev/zero"):
        with pytest.raises(ConfigError) as err:
            load_config(write(tmp_path, f'[slack]\nwebhook_url_file = "{source}"\n'))
        [line] = err.value.problems
        assert line.endswith(f'[slack] webhook_url_file = "{source}": cannot read the secret: '
                             "not a regular file")


def test_a_secret_file_too_large_or_not_utf8_is_a_problem(tmp_path, short_dir):
    large = short_dir / "large"
    large.write_bytes(b"x" * (64 * 1024 + 1))
    latin1 = short_dir / "latin1"
    latin1.write_bytes(b"xoxb-caf\xe9")
    for source, reason in ((large, "larger than 64 KiB"), (latin1, "not UTF-8 text")):
        with pytest.raises(ConfigError) as err:
            load_config(write(tmp_path, f'[slack]\ntoken_file = "{source}"\nchannel = "#c"\n'))
        [line] = err.value.problems
        assert line.endswith(f'[slack] token_file = "{source}": cannot read the secret: {reason}')


def test_a_bad_secret_from_a_file_names_the_file_not_the_secret(tmp_path, short_dir):
    secret = short_dir / "webhook"
    secret.write_text("ftp://hooks.slack.com/FILECANARY11\n")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f'[slack]\nwebhook_url_file = "{secret}"\n'))
    [line] = err.value.problems
    assert line.endswith(f'[slack] webhook_url = "***" (from "{secret}"): expected an http(s) '
                         "URL with a host, e.g. https://example.com")
    assert "FILECANARY11" not in line


def test_a_remote_with_credentials_and_a_bad_host_is_one_line_without_them(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "", remote="https://deploy:REMOTECANARY12@[::1/site.git"))
    [line] = err.value.problems
    assert line.endswith('[git] remote = "https://***@[::1/site.git": expected a git URL with a '
                         "valid host and port, or a path")


def test_webhook_secret_from_a_file_or_a_systemd_credential(tmp_path, monkeypatch):
    secret = tmp_path / "webhook-secret"
    secret.write_text("FILECANARY14-0123456789\n")
    config = load_config(write(tmp_path, f'[webhook]\nsecret_file = "{secret}"\n'))
    assert config.webhook.secret == "FILECANARY14-0123456789"
    assert "FILECANARY14" not in redact_module.redact("bad call: FILECANARY14-0123456789")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "webhook-secret").write_text("CREDCANARY15-0123456789")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = load_config(write(tmp_path, '[webhook]\nlisten = "127.0.0.1:9400"\n'))
    assert (config.webhook.secret, config.webhook.listen_port) == ("CREDCANARY15-0123456789",
                                                                    9400)
    assert config.warnings == ()


def test_a_bad_webhook_secret_file_names_the_file_not_the_secret(tmp_path, short_dir):
    secret = short_dir / "webhook-secret"
    secret.write_text("SHORTCANARY16\n")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f'[webhook]\nsecret_file = "{secret}"\n'))
    [line] = err.value.problems
    assert line.endswith(f'[webhook] secret = "***" (from "{secret}"): expected at least 16 '
                         "characters without spaces, e.g. from `openssl rand -hex 32`")
    assert "SHORTCANARY16" not in line


def test_an_inline_webhook_secret_in_a_world_readable_file_is_warned_about(tmp_path):
    config = load_config(write(tmp_path, '[webhook]\nsecret = "WARNCANARY17-0123456789"\n',
                               mode=0o644))
    [warning] = config.warnings
    assert "[webhook] secret holds a secret" in warning and "CANARY17" not in warning
