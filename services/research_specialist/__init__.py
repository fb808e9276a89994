"""The research specialist: finds facts on the web and remembers them."""
