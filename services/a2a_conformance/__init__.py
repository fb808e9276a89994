"""The A2A conformance agent: a mesh agent whose scripted model plays the TCK's scenarios."""
