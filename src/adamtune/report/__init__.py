"""Drawing analysis records and study results: terminal, JSON, HTML. Computes nothing new."""
