"""q2rec serve."""
