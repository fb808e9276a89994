"""The math specialist: exact arithmetic with its tools, in the sandbox."""
