"""Targets the bastion connects to on behalf of users: PostgreSQL, SSH."""
