"""The run store: every path of it, levels and their checks, solutions, the index, repair, job claims."""
