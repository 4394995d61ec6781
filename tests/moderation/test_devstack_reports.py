"""What `make run` prints while it sets up: a line per step, the first model's report kept in a file and summed up
in one line, and no progress bar redrawn line after line into a log."""

import io
import json
import sys

import pytest

from classifier.cli import _progress_bar
from moderation.devstack.desk import Desk, DevstackError, training_summary


def test_a_steps_report_goes_to_its_file_and_the_terminal_gets_only_the_steps_line(tmp_path, capfd):
    terminal = io.StringIO()
    report = tmp_path / "var" / "report.json"
    desk = Desk(terminal, host="127.0.0.1", port=8000)
    desk.run_step([sys.executable, "-c", 'print(\'{"version": "v0001"}\')'], "Training", output=report)

    assert json.loads(report.read_text()) == {"version": "v0001"}
    assert terminal.getvalue() == "desk     | Training\n"
    assert "v0001" not in capfd.readouterr().out


def test_a_failing_step_with_a_report_file_still_stops_the_start_with_its_name(tmp_path):
    desk = Desk(io.StringIO(), host="127.0.0.1", port=8000)
    with pytest.raises(DevstackError, match=r"Training failed \(exit 3\)"):
        desk.run_step([sys.executable, "-c", "import sys; sys.exit(3)"], "Training", output=tmp_path / "r.json")


def test_the_summary_line_gives_the_test_figures_and_the_cross_validated_choice(tmp_path):
    report = tmp_path / "first-model.json"
    report.write_text(
        json.dumps(
            {
                "version": "v0001",
                "seconds": 38.02,
                "metrics": {"accuracy": 0.93976, "precision": 0.78218, "recall": 0.96341, "n": 415},
                "chosen_by_cv": {"chosen": {"image_size": 128, "l2": 0.27}},
            }
        )
    )
    line = training_summary(report)
    assert line.startswith("Model v0001 trained in 38 s; on its 415 test photos: accuracy 0.940, precision 0.782")
    assert "recall 0.963; chosen by cross-validation: image_size 128, l2 0.27" in line
    assert line.endswith(f"(full report: {report})")


def test_an_unreadable_report_is_said_so_without_stopping_the_start(tmp_path):
    broken = tmp_path / "first-model.json"
    broken.write_text("{not json")
    assert "could not be read" in training_summary(broken)
    assert "could not be read" in training_summary(tmp_path / "missing.json")


def test_the_progress_bar_draws_nothing_when_stderr_is_not_a_terminal(capsys):
    progress, close = _progress_bar(True)
    for done in range(50):
        progress("cross-validating", done, 50)
    close()
    assert capsys.readouterr().err == ""
