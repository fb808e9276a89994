"""This project's agents: one package per agent, each served as its own process."""
