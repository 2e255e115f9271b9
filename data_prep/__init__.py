"""q2rec data_prep."""
