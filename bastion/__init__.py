"""bastion: a privileged-access gateway whose SSH login shell is a policy-enforcing, recording TUI."""
