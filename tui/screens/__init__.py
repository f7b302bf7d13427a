"""Screens of the bastion TUI."""
