"""`python -m agent.setup [options]`: `ghost-agent setup [options]` through agent.cli's main."""

from agent.setup.command import main

if __name__ == "__main__":
    raise SystemExit(main())
