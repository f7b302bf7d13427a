"""Textual layer over the headless core in `bastion/`."""
