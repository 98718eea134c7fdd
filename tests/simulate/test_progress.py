"""The one progress protocol (userloop.progress): what a simulation and an assistant evaluation report, and the
command line's bars drawing it."""

from contextlib import contextmanager

from userloop.display import bars
from userloop.progress import Task, no_progress
from userloop.simulate.runs import SimulationConfig, simulate


class Recorder(Task):
    """A task that records what it is told."""

    def __init__(self, events: list, description: str) -> None:
        self.events, self.description = events, description

    def start(self, total, note="", completed=0):
        self.events.append((self.description, "start", total, completed))

    def advance(self, n=1):
        self.events.append((self.description, "advance", n))

    def set(self, completed, total):
        self.events.append((self.description, "set", completed, total))

    def count(self, n):
        self.events.append((self.description, "count", n))


def recording(events: list):
    @contextmanager
    def progress(description, total=None):
        events.append((description, "open", total))
        yield Recorder(events, description)

    return progress


def test_a_simulation_is_one_step_with_its_total_conversations_and_turns(scripted, tmp_path):
    config = SimulationConfig(assistant=scripted["assistant"], user=scripted["user"], scenarios=str(scripted["scenarios"]), n=2)
    events = []
    result = simulate(config, tmp_path / "run", progress=recording(events))
    total = result.summary["conversations"]
    assert events[0] == ("simulating", "open", total) and events[1] == ("simulating", "set", 0, total)
    assert sum(e[2] for e in events if e[1] == "advance") == total
    assert sum(e[2] for e in events if e[1] == "count") > 0
    events.clear()
    simulate(config, tmp_path / "run", progress=recording(events))  # resumed: every conversation already done
    assert events == [("simulating", "open", total), ("simulating", "set", total, total)]


def test_the_default_shows_nothing_and_a_task_is_an_on_progress_callback(scripted, tmp_path):
    config = SimulationConfig(assistant=scripted["assistant"], user=scripted["user"], scenarios=str(scripted["scenarios"]))
    assert simulate(config, tmp_path / "run", progress=no_progress).summary["conversations"] > 0
    events = []
    Recorder(events, "step")(3)
    assert events == [("step", "advance", 3)]


def test_the_command_line_bars_draw_every_call_of_the_protocol(scripted, tmp_path):
    config = SimulationConfig(assistant=scripted["assistant"], user=scripted["user"], scenarios=str(scripted["scenarios"]))
    for keep in (False, True):
        with bars(keep=keep, log_to=tmp_path / f"logs-{keep}") as progress:
            simulate(config, tmp_path / f"run-{keep}", progress=progress)
            with progress("phases") as task:
                task.start(None, "unknown total")
                task.start(4, "known", completed=1)
                task.advance(2)
                task(1)
                task.set(4, 4)
