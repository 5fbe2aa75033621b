"""The one harness every benchmark and rehearsal in bench/ runs on:

cluster    a local Ray cluster and Serve; serve_config.yaml read, cut down, overridden
           and deployed; waits with deadlines
endpoints  every endpoint two ways: an HTTP request, and the same work in this process
load       counted runs (requests/s and latencies, over HTTP or in-process) and the
           rehearsals' closed- and open-loop load
figures    what a run's answers add up to: percentiles, failures, recovery time
procs      processes: Serve's by PID, RSS, CPU, open files, the machine's busy CPU
"""
