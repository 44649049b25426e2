"""The CrossGuard policy pack (``__main__.py``), its rules by category (``rules/``), the parsers
they judge host files with (``parsers/``) and the offline runner ``synth check`` uses."""
