"""Small helpers that are not part of a training path: result tables and plots."""
