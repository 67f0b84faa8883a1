"""Delivery: the only code that loops, sleeps and retries.

``worker`` (read -> recheck -> attempt -> settle), ``retry`` (outcome -> next action, backoff,
bisection), ``recheck`` (suppression, then stored consent), ``pool`` (a process's workers),
``aggregate`` (an aggregate destination's counter and releaser).
May import ``router.queue``, ``router.core``, ``destinations`` (and its transport),
``router.compliance`` recorders and ``router.observability``; never the edge.
"""
