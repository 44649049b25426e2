"""The vocabulary config values are made of, shared by the config models (``stacks/``) and the
components that take them: field types, value grammars, the cross-field rule framework and
the provider's published lists. It imports nothing of the project's other packages."""
