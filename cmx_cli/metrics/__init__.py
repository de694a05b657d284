"""Metrics of cmx models and their baselines: classification from probabilities, masked
bases in bits per base, and the tables that show them."""
