"""Interpreting concepts across a whole store: top-activating units, frequencies, contexts."""
