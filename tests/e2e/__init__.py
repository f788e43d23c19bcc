"""End-to-end tier: a real systemd in a throwaway guest (tests/e2e/guest.py)."""
