"""Progressive delivery: a blessed challenger goes through shadow and a canary judged on
live traffic before it becomes the champion (or is rolled back).

    state       the rollout's phases, its state file and decision records
    evidence    the live comparison from the prediction log and labels
    health      error rate and p95 latency per served version (Prometheus, or /metrics)
    judge       the rules: wait, advance, promote, roll back
    controller  the state machine the monitor advances once per visit
"""
