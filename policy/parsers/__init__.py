"""Parsers for the text that resources carry (nginx, sshd, UFW, cloud-config, policy documents,
shell heredocs). Pure functions; each module names the tool whose semantics it follows."""
