"""Stand-ins for the world around the agent, used by `ghost-agent demo` and the tests.

- `sitesim`: a small HTTP server that behaves like Ghost serving a theme.
- `systemctl`: a `systemctl` program at the process boundary that restarts the site stand-in.
"""
