"""The commands that compose the trainers and measurements (the primitives below): `rlhf sample` (sample.py),
the stages as calls of the commands' functions (pipeline.py), `rlhf demo`, `rlhf compare`, `rlhf loop` (with its
labels, loop_labels.py), `rlhf bench`, and their configs (configs.py; light, for `rlhf CMD --help`)."""
