"""HTTP in: the application, ingest, the consent API, the operator API, tokens, shared state.

May import ``router.core``, ``router.queue``, ``router.compliance`` (read APIs),
``router.observability`` and ``router.runtime``'s types; nothing imports the edge but the CLI.
"""
