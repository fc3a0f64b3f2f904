"""Rollout engines (`--rollout-engine`): the engines and `make_engine` are in `core.py`, their flags in
`options.py` (light, for `rlhf CMD --help`)."""
