from rlhfkit.label.assign import Slot, has_room, is_expired, lease_expiry, page_numbers, queue_order, shown_order


def test_full_and_seen_items_are_never_offered():
    slots = [Slot(1, 0, 3), Slot(2, 1, 0), Slot(3, 2, 2)]
    assert queue_order(slots, overlap=3, seen={3}) == [2]


def test_started_items_come_first_then_file_order():
    slots = [Slot(1, 0, 0), Slot(2, 1, 2), Slot(3, 2, 1), Slot(4, 3, 2)]
    assert queue_order(slots, overlap=3) == [2, 4, 3, 1]


def test_room_is_strictly_below_overlap():
    assert has_room(2, 3) and not has_room(3, 3)


def test_lease_expires_only_after_its_time():
    end = lease_expiry(100.0, 30)
    assert end == 130.0
    assert not is_expired(end, 130.0) and is_expired(end, 130.5)


def test_shown_order_is_a_fixed_permutation_per_assignment():
    assert sorted(shown_order(5, seed=7)) == list(range(5))
    assert shown_order(5, seed=7) == shown_order(5, seed=7)
    assert len({tuple(shown_order(5, seed=s)) for s in range(20)}) > 1


def test_page_numbers_count_this_item():
    assert page_numbers(answered=0, available_after=9) == (1, 10)
    assert page_numbers(answered=4, available_after=0) == (5, 5)
