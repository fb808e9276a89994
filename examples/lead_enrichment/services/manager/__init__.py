"""The manager: reads the batch, fans research and checks out at once, writes the results."""
