"""The pure core: an event's way from wire bytes to routing decisions, as values.

May import consent's decoders and policy, destinations' pure modules, ``router.routing`` and
``router.errors``; never aiohttp, redis, opentelemetry, asyncio, logging or the clock (``now``
is passed in), nor the router's I/O modules.
"""
