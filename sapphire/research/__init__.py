"""Research workflow, pure parts: walk-forward splits, search spaces, tune configs, the
per-trial objective, leaderboards, config export and stored-run reports (Ray: ``actors.tune``)."""
