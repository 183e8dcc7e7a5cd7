"""The search on Ray Tune: the Tuner built or restored, what one trial runs, the scheduler kinds,
the search space, the live view and joining or starting Ray."""
