"""The text specialist: measures text with its own tool rather than guessing."""
