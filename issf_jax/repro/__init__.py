"""The reproduction harness's library: table definitions, run bookkeeping, reports."""
