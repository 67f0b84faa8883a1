"""What privacy and legal read: the audit trail's subject index and the subject report."""
