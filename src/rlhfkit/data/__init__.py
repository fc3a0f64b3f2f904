"""Data formats of docs/design.md §2: validated JSONL readers/writers, rankings -> pairs, collation."""
