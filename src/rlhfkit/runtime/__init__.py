"""The run helpers: what every run of a trainer (and the toy world's pretraining) shares, below `train/`,
`eval/` and `world/`: the options every trainer takes (`options.py`), the run directory (`directory.py`), seeding,
threads, the optimizer and its schedule (`optim.py`)."""
