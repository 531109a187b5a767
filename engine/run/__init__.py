"""The run: one flow executed against providers, with its budget, record and every call's policy (docs/execution.md)."""
