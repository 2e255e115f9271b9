"""Training: fitting the CF models on Ray, and loading what was trained."""
