"""The KServe predictor: `python -m ctpipe.serving` (the serving image's entry point)."""
