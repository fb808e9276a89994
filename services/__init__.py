"""The seed mesh's agents, one package each: written exactly as a user writes their own."""
