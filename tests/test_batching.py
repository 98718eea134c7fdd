from userloop.batching import token_budget_batches


def test_batches_are_sorted_and_fit_the_budget():
    words = ["aaaa", "a", "aaa", "aa", "aaaaa", "aa"]
    batches = token_budget_batches(words, len, max_tokens=8)
    assert [w for b in batches for w in b] == sorted(words, key=len)  # every item once, shortest first
    assert all(len(b) * max(map(len, b)) <= 8 for b in batches)
    assert batches == [["a", "aa", "aa"], ["aaa", "aaaa"], ["aaaaa"]]  # the fewest greedy cuts


def test_an_item_over_the_budget_is_a_batch_of_its_own():
    assert token_budget_batches(["a" * 9, "a"], len, max_tokens=4) == [["a"], ["a" * 9]]


def test_rows_per_item_and_max_rows():
    assert token_budget_batches([2, 2, 2, 2], lambda n: n, max_tokens=8, rows_per_item=2) == [[2, 2], [2, 2]]
    assert token_budget_batches([1, 1, 1, 1, 1], lambda n: n, max_tokens=0, max_rows=2) == [[1, 1], [1, 1], [1]]
    assert token_budget_batches([3, 1, 2], lambda n: n, max_tokens=0) == [[1, 2, 3]]  # 0: no limit
    assert token_budget_batches([], len, max_tokens=8) == []
