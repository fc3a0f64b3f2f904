import torch

from rlhfkit.data.collate import encode, encode_pair, last_token_index
from rlhfkit.losses import lm_loss
from rlhfkit.train.sft import collate, tokenize_demos


def test_completion_ends_with_eos_and_only_it_carries_loss(world_tokenizer):
    prompt = encode(world_tokenizer, "list two fruits .")
    ids, mask = encode_pair(world_tokenizer, prompt, "apple pear", max_length=64)
    assert ids[-1] == world_tokenizer.eos_token_id
    assert mask == [0] * len(prompt) + [1, 1, 1]


def test_long_prompts_lose_tokens_on_the_left(world_tokenizer):
    prompt = encode(world_tokenizer, "list two fruits .")
    ids, mask = encode_pair(world_tokenizer, prompt, "apple pear", max_length=5)
    assert ids == prompt[-2:] + encode(world_tokenizer, "apple pear") + [world_tokenizer.eos_token_id]
    assert mask == [0, 0, 1, 1, 1]


def test_prompt_and_padding_tokens_carry_no_loss(world_tokenizer):
    records = [{"prompt": "list two fruits .", "completion": "apple pear"},
               {"prompt": "what color is the sky ?", "completion": "blue"}]
    batch = collate(tokenize_demos(world_tokenizer, records, max_length=64), world_tokenizer.pad_token_id, "cpu")
    assert batch["loss_mask"].sum() == 3 + 2  # completion tokens + EOS per row
    assert (batch["loss_mask"] <= batch["attention_mask"]).all()
    torch.manual_seed(0)
    logits = torch.randn(*batch["input_ids"].shape, len(world_tokenizer))
    base = lm_loss(logits, batch["input_ids"], batch["loss_mask"])
    # Changing what the prompt and the padding predict must not change the loss.
    outside = (batch["loss_mask"][:, 1:] == 0)
    changed = logits.clone()
    changed[:, :-1][outside] += torch.randn_like(changed[:, :-1][outside]) * 5
    assert torch.allclose(lm_loss(changed, batch["input_ids"], batch["loss_mask"]), base)
    # ... while changing what a completion token predicts does.
    changed[0, 4, 7] += 3.0  # one logit: softmax ignores a shift of all of them
    assert not torch.allclose(lm_loss(changed, batch["input_ids"], batch["loss_mask"]), base)


def test_lm_loss_hand_computed():
    # Two positions predicted, uniform over 4 tokens: loss = log 4.
    logits = torch.zeros(1, 3, 4)
    ids = torch.tensor([[1, 2, 3]])
    assert torch.isclose(lm_loss(logits, ids, torch.tensor([[0, 1, 1]])), torch.log(torch.tensor(4.0)))


def test_last_token_index_under_right_padding():
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [1, 3, 0]
