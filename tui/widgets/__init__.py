"""Widgets of the bastion TUI; each renders core state and routes keys, nothing more."""
