"""The manager: plans the work and delegates it to the specialists."""
