"""Sub-commands added by later modules (generate, sweep, export) register here."""

COMMANDS: list = []
