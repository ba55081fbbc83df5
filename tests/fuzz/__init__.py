"""Decoder fuzz harness: ``python -m tests.fuzz --help`` (``make fuzz`` runs it all)."""
