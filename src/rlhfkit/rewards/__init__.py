"""Where a policy's reward comes from: a reward model, reward functions written by the user (a verifier, a unit
test, a format check), or a weighted sum of them (`combine.Rewards`); and judges, reward sources that are logged
and reported but never trained on (`sources`).

Reward functions follow TRL's convention (GRPOTrainer's `reward_funcs`), so one written for TRL runs here:

    def my_reward(prompts, completions, **row_fields) -> list[float]

called on a batch: `prompts` and `completions` are texts (conversational data: lists of messages, the completion
one assistant message), and every further field of the dataset's rows comes as a keyword argument holding one
value per completion. `finished` (whether the completion ended with EOS) is passed too.
"""
