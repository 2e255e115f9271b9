"""q2rec tune."""
