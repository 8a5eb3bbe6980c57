"""The ``raypipe`` command line."""
