"""The allowance of compute before the clock (trainer/startup.py): measured from the shipped
baseline's own start-ups per hardware class, 2 x the slowest of the last 8 + 2 s, never more
than the profile's limit; none measured yet: the profile's limit."""
from trainer import baseline_path, startup


def test_allowance_follows_the_baselines_measured_start_ups(tmp_path):
    assert startup.allowance(tmp_path, "cpu-x-1t", 30.0) == (30.0, False)
    startup.record(tmp_path, "cpu-x-1t", 1.5)
    startup.record(tmp_path, "cpu-x-1t", 2.5)
    assert startup.allowance(tmp_path, "cpu-x-1t", 30.0) == (7.0, True)
    assert startup.allowance(tmp_path, "cpu-x-2t", 30.0) == (30.0, False)  # per hardware class
    for _ in range(startup.KEEP):
        startup.record(tmp_path, "cpu-x-1t", 1.0)  # the slow one ages out
    assert startup.allowance(tmp_path, "cpu-x-1t", 30.0) == (4.0, True)
    startup.record(tmp_path, "cpu-x-1t", 100.0)
    assert startup.allowance(tmp_path, "cpu-x-1t", 30.0) == (30.0, True)  # never above the profile's


def test_a_broken_store_means_no_measurement(tmp_path):
    (tmp_path / startup.FILE).write_text("{not json")
    assert startup.allowance(tmp_path, "cpu-x-1t", 30.0) == (30.0, False)
    startup.record(tmp_path, "cpu-x-1t", 2.0)
    assert startup.allowance(tmp_path, "cpu-x-1t", 30.0) == (6.0, True)


def test_only_the_shipped_baseline_byte_for_byte_is_the_baseline(tmp_path):
    assert startup.is_baseline(baseline_path())
    copy = tmp_path / "train.py"
    copy.write_bytes(baseline_path().read_bytes() + b"\n")
    assert not startup.is_baseline(copy)
    assert not startup.is_baseline(tmp_path / "missing.py")
