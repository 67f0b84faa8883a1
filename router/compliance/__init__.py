"""What privacy and legal read: pure cores and their Redis shells (layout.md)."""
