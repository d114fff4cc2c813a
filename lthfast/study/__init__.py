"""The whole study: its plan as a job graph, the calibration of its cost, and the executors that run it."""
