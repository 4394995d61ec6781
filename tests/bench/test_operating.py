"""The learning-loop benchmark's operating-point figures: the loop's thresholds and the baselines' equal budget."""

from bench.harness.operating import at_budget, figures

# Ten photos, three violations; the baseline ranks two violations first and the third last.
SCORES = [0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.2, 0.1, 0.05]
TRUTHS = [True, True, False, False, False, False, False, False, False, True]
OOD = [False] * 10


def test_figures_counts_auto_actions_and_confirmed_reviews():
    judged = figures(SCORES, TRUTHS, OOD, review=0.5, auto=0.85)
    # 0.9 is auto-actioned (a violation); 0.8, 0.7, 0.6 and 0.55 wait for review, where one violation is confirmed.
    assert judged["auto_share"] == round(1 / 3, 4)
    assert judged["auto_precision"] == 1.0
    assert judged["review_share"] == 0.4
    assert judged["actioned_precision"] == 1.0
    assert judged["actioned_recall"] == round(2 / 3, 4)
    assert judged["to_people_or_auto"] == 5
    assert judged["precision"] == 0.4


def test_a_wrong_auto_action_costs_actioned_precision():
    truths = [False, True, False, False, False, False, False, False, False, True]
    judged = figures(SCORES, truths, [True] + [False] * 9, review=0.5, auto=0.85)
    assert judged["auto_precision"] == 0.0
    assert judged["actioned_precision"] == 0.5
    assert judged["ood_auto_actioned"] == 1


def test_at_budget_gives_exactly_the_budget_to_the_highest_scores():
    assert at_budget(SCORES, TRUTHS, 2) == {
        "budget": 2,
        "budget_precision": 1.0,
        "budget_actioned_recall": round(2 / 3, 4),
        "budget_actioned_f1": 0.8,
    }
    # With the whole stream as budget every violation is caught.
    assert at_budget(SCORES, TRUTHS, 10)["budget_actioned_recall"] == 1.0


def test_at_budget_breaks_ties_by_stream_order_and_counts_nothing_caught():
    tied = [0.5] * 4
    assert at_budget(tied, [False, False, True, True], 2)["budget_actioned_recall"] == 0.0
    assert at_budget(tied, [False, False, True, True], 2)["budget_actioned_f1"] == 0.0
    assert at_budget(tied, [True, False, False, False], 1)["budget_precision"] == 1.0
    assert at_budget(SCORES, TRUTHS, 0)["budget"] == 0
