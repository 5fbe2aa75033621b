"""FaceGraph's benchmarks and fault rehearsals, run by hand (never by the tests):

    python -m bench --list            every script, with its group and first docstring line
    python -m bench NAME [options]    one of them (facegraph bench NAME is the same)

perf/ measures throughput and latency (perf/all.py: every comparison in one table),
faults/ rehearses failures and overload, quality/ measures output quality. Everything
runs on the one harness in harness/. A script is a module of one of those folders with a
main(argv) function; its name is the module's name (bench/registry.py).
"""
