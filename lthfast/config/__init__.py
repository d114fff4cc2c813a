"""Declarations of what a run and a study are: TrainConfig, ImpConfig, analysis settings, StudyConfig. No computation."""
