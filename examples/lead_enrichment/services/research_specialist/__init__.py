"""The research specialist: one company's facts from web search, each with its source."""
