"""Data formats of DESIGN §2: validated JSONL readers/writers, rankings -> pairs, collation."""
