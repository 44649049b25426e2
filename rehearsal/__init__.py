"""The rehearsal: a stack's hosts converged on real Debian boxes (systemd, sshd, Docker) in a lab
network namespace, twice, then checked (``python -m synth rehearse``)."""
