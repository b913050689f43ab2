"""`rig report`: a run's figures (PNG) and summary (Markdown), for a group-meeting slide."""
