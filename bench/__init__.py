"""racestack benchmarks: each bench_<area>.py prints its figures next to the targets."""
