"""Redis streams: one queue per destination, group commit, dead letters, holds.

``keys`` names every Redis key once; ``items`` is the one queue item and its stream entries;
``enqueuer`` is the group commit; ``streams`` the client, consumer groups, suppression, queue
status and holds. May import ``router.core`` (outcomes), ``destinations.base``, ``consent``'s
ids and store keys, ``router.errors`` and redis; never the edge or delivery.
"""
