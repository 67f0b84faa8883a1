"""What privacy and legal read: the audit trail, the data map, anomalies and holds, erasure,
the quarantine, the record of processing, differentially private aggregates, the subject
index and the subject access report.

Pure cores (``audit_chain``, the anomaly detector's arithmetic, the inventory's
``build_inventory``) inside Redis shells (``audit_log``, ``datamap``, ``anomaly``, ``erasure``,
``quarantine``, ``inventory``, ``aggregates``: OpenDP noise, windows, budgets, releases). May import
``router.core``, ``router.queue`` and ``router.observability``; never the edge or delivery.

The quarantine is here rather than in ``router.queue``: nothing consumes it, it is kept for
people (operators reading ``/admin/quarantine``) and it holds data about people at rest, so it
answers to the same rules as the audit trail (bounded in count and age, emptied by erasure).
"""
