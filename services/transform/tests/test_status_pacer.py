"""How often a task publishes its status: news at once or soon after, a heartbeat otherwise."""

from __future__ import annotations

from freshet.transform.runtime import StatusPacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_news_is_published_at_once_then_at_most_every_min_interval() -> None:
    clock = Clock()
    pacer = StatusPacer(min_interval_s=0.2, interval_s=1.0, clock=clock)
    assert pacer.due(news=True)  # the first status: at once
    clock.now += 0.05
    assert not pacer.due(news=True)  # news too soon: held back...
    clock.now += 0.1
    assert not pacer.due()  # ...still too soon, and kept...
    clock.now += 0.06
    assert pacer.due()  # ...and published by the first call after the interval
    clock.now += 0.5
    assert not pacer.due()  # nothing new: not before the heartbeat
    clock.now += 0.5
    assert pacer.due()  # the heartbeat, a second after the last status
    clock.now += 5.0
    assert pacer.due(news=True)  # a lone change after a quiet spell: at once


def test_a_stream_of_news_is_published_a_few_times_a_second() -> None:
    clock = Clock()
    pacer = StatusPacer(min_interval_s=0.2, interval_s=1.0, clock=clock)
    published = 0
    for _ in range(200):  # news every 10 ms for 2 s
        published += pacer.due(news=True)
        clock.now += 0.01
    assert published == 10
