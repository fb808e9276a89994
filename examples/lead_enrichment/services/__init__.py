"""The lead-enrichment mesh's agents: one package per agent, each served as its own process."""
