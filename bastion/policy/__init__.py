"""Policy: SQL classification, verdicts, masking and value detectors."""
