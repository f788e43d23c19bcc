"""ghost-deploy-agent: a pull-based deploy agent for Ghost sites."""

__version__ = "0.1.0"
