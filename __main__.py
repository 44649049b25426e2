"""Entry point for `pulumi up` and `python -m synth`: all logic lives in stacks/ and components/."""

from stacks.program import main

main()
