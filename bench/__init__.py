"""The router's benchmark: ``make bench`` (``.venv/bin/python -m bench --help``).

It runs, in the same run and with the same load, a bare aiohttp handler and the router (Redis,
the routing file ``bench/routing.yaml``, local fake receivers), then prints throughput, latency,
CPU per event and peak RSS side by side, measures delivery, and checks that every accepted
event reached its destinations. Performance is measured and printed here, never asserted.
"""
