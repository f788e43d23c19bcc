"""The smallest valid agent.toml, for tests that add to it or change one value."""

MINIMAL_CONFIG = """\
[site]
name = "dev1"
flag = "dev1"
public_url = "https://dev1.website.com"
content_dir = "/var/www/ghost/content"

[git]
remote = "git@github.com:acme/site.git"

[deploy]
path = "/var/www/ghost/content/themes/acme"

[ghost]
unit = "ghost_dev1-website-com"
"""
