"""Step runners: do the I/O a decision chose, through the adapters, and record the result."""
