"""Demo and load tools: the fake upstream, simulated traffic, the demo models (not the product)."""
