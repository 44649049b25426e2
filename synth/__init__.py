"""Offline synth: the program's desired state from Pulumi's mock engine."""
