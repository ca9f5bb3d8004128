"""``gpuprov ci``: an ephemeral GPU host for one CI job, always torn down (run, signals, summary)."""
