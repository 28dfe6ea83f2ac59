"""The drift monitor: prediction log, metrics, triggers and the retraining policy."""
