"""Concept dictionaries: fit on an ActivationStore, encode/decode, interpret across the corpus."""
