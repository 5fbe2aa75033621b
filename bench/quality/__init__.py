"""Output quality benchmarks: how good the results are, judged on data not tuned on."""
