"""Stream analytics (Bytewax): validation, grid frequency, history sink."""
