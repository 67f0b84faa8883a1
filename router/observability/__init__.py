"""Observability: spans, metrics and logs with bounded labels. May import opentelemetry; imported
by the edge, delivery, compliance and the composition root, never by ``router.core``.

``labels`` (the one label policy) ← ``tracing`` (spans), ``histogram`` (``BatchHistogram`` and
the readers: the only user of SDK internals) ← ``metrics`` (counters, instruments, the one
Prometheus renderer) ← ``setup`` (providers from ``OTEL_*``); ``logs`` (JSON lines).
"""
