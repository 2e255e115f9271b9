"""q2rec actors."""
