from transformers import AutoTokenizer


def test_round_trip_of_world_text(world_tokenizer):
    text = "summarize : my name is tom . i live in paris . tl;dr : tom , paris !"
    ids = world_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.split())  # one token per word
    assert world_tokenizer.decode(ids) == text


def test_pad_and_eos_are_distinct_special_tokens(world_tokenizer):
    assert world_tokenizer.pad_token_id is not None and world_tokenizer.eos_token_id is not None
    assert world_tokenizer.pad_token_id != world_tokenizer.eos_token_id
    assert world_tokenizer.unk_token_id not in (world_tokenizer.pad_token_id, world_tokenizer.eos_token_id)


def test_unknown_words_map_to_unk(world_tokenizer):
    ids = world_tokenizer("cat zyzzyva", add_special_tokens=False)["input_ids"]
    assert ids[1] == world_tokenizer.unk_token_id and ids[0] != world_tokenizer.unk_token_id


def test_save_pretrained_round_trip(tmp_path, world_tokenizer):
    world_tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "list three animals . cat dog horse"
    ids = world_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert loaded(text, add_special_tokens=False)["input_ids"] == ids
    assert loaded.pad_token_id == world_tokenizer.pad_token_id and loaded.eos_token_id == world_tokenizer.eos_token_id
