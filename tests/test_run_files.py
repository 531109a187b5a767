"""What a run's folder holds on disk, and what it costs to make: the lock on the folder, files made only
when there is something to put in them, and texts many runs share kept once as linked snapshots."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import HomeError
from engine.run.home import RunHome, hold_run_lock, run_is_live
from engine.run.reader import load_run, read_setup
from engine.run.snapshots import Snapshots
from engine.run.store import RunStore
from engine.serve.passthrough import CallRecord
from engine.session import Session
from engine.testing.chat_server import ChatServer
from tests.conftest import loopback_pool
from tests.helpers import run

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY if os.path.isdir(sys.argv[1]) else os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def holding(path: Path) -> subprocess.Popen[str]:
    """Another process that holds the lock on `path` until its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(10)


def test_a_pass_through_call_records_four_names_and_links_the_texts_every_call_shares(tmp_path: Path) -> None:
    with ChatServer() as server:
        session = Session(loopback_pool(server.url), home=tmp_path / "home")
        folders = []
        for n in range(3):
            record = CallRecord(session, f"20261204-000000-0000000{n}", "fast", [{"role": "user", "content": f"hi {n}"}])
            record.open()
            record.close()
            folders.append(tmp_path / "home" / "runs" / record.run_id)
    for n, folder in enumerate(folders):
        # no run.lock (the folder is locked), no events.jsonl (no events), no steps.jsonl (nothing to resume)
        assert sorted(os.listdir(folder)) == ["flow.flow", "inputs.json", "pool.json", "summary.json"]
        assert load_run(folder.name, tmp_path / "home").status == "ok" and not run_is_live(folder)
        assert f"hi {n}" in read_setup(folder)[1]["messages"]
    pools = [os.stat(folder / "pool.json") for folder in folders]
    assert len({p.st_ino for p in pools}) == 1 and pools[0].st_nlink == 4  # three runs and the snapshot
    snapshot = next((tmp_path / "home" / "snapshots").glob("*.json"))
    assert snapshot.read_text() == (folders[0] / "pool.json").read_text() == session.pool_record()
    assert '"fast"' in snapshot.read_text()


def test_a_flow_run_keeps_its_journal_and_events_and_resumes_from_them(tmp_path: Path) -> None:
    flow = tmp_path / "two.flow"
    flow.write_text('input q\nstep a { model: fast  task: "{q}" }\nstep b { model: fast  sees: a  task: "more" }\noutput b\n')
    with ChatServer() as server:
        first = run(flow, {"q": "x"}, loopback_pool(server.url), tmp_path / "home")
    folder = tmp_path / "home" / "runs" / first.run_id
    assert {"events.jsonl", "steps.jsonl", "flow.flow", "inputs.json", "pool.json", "summary.json"} <= set(os.listdir(folder))
    assert read_setup(folder) == (flow.read_text(), {"q": "x"})  # from the journal's first line
    assert (folder / "flow.flow").read_text() == flow.read_text()


def recorded_run(tmp_path: Path, run_id: str) -> tuple[RunHome, Path]:
    """A home with one run folder in it (a `flow.flow` makes it a run's), locked by nobody."""
    home = RunHome(tmp_path / "home")
    folder = home.new_run(run_id)
    (folder / "flow.flow").write_text("")
    return home, folder


def glancing(folder: Path) -> subprocess.Popen[str]:
    """Another process holding the folder shared for 50 ms, as `run_is_live` does for a moment (once it says it holds it)."""
    glance = ("import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDONLY)\nfcntl.flock(fd, fcntl.LOCK_SH)\n"
              "print('held', flush=True)\ntime.sleep(0.05)\n")
    reader = subprocess.Popen([sys.executable, "-c", glance, str(folder)], stdout=subprocess.PIPE, text=True)
    assert reader.stdout is not None and reader.stdout.readline() == "held\n"
    return reader


@pytest.mark.parametrize("lock", ["folder", "run.lock"], ids=["the folder", "an older Baton's run.lock"])
def test_a_run_in_flight_is_live_and_cannot_be_resumed_by_another_process(tmp_path: Path, lock: str) -> None:
    home, folder = recorded_run(tmp_path, "20261204-000000-aaaaaaaa")
    holder = holding(folder if lock == "folder" else folder / "run.lock")
    try:
        assert run_is_live(folder)
        with pytest.raises(HomeError, match="is being run by another process right now"):
            RunStore.open(home, folder.name)
    finally:
        release(holder)
    assert not run_is_live(folder)
    store = RunStore.open(home, folder.name)
    assert run_is_live(folder)  # seen from this process's other descriptor, as from another process
    store.close()


def test_a_resume_waits_out_a_reader_looking_at_the_run_for_a_moment(tmp_path: Path) -> None:
    """`baton runs` or a server's run list holds a run's folder shared while it asks whether it is live; a resume at
    that instant used to be told the run was being run by another process."""
    home, folder = recorded_run(tmp_path, "20261204-000000-dddddddd")
    reader = glancing(folder)
    store = RunStore.open(home, folder.name)  # waits the 50 ms out instead of refusing
    reader.wait(10)
    assert run_is_live(folder)
    store.close()


def test_a_new_run_waits_out_a_reader_that_holds_its_folder_for_a_moment(tmp_path: Path) -> None:
    _home, folder = recorded_run(tmp_path, "20261204-000000-cccccccc")
    reader = glancing(folder)
    fd = hold_run_lock(folder, folder.name, new=True)  # blocks until the reader lets go
    assert reader.wait(10) == 0
    assert fd is not None and run_is_live(folder)
    os.close(fd)


def test_a_snapshot_full_of_links_gives_way_to_a_fresh_one_and_no_links_to_a_plain_file(tmp_path: Path,
                                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    snapshots = Snapshots(tmp_path / "snapshots")
    (tmp_path / "runs").mkdir()
    snapshots.place("pool text", str(tmp_path / "runs" / "a.json"), durable=True)
    full = next((tmp_path / "snapshots").glob("*.json"))
    real_link = os.link

    def link_limit(src: str, dst: str) -> None:
        if src == str(full):
            raise OSError(errno.EMLINK, "Too many links")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_limit)
    snapshots.place("pool text", str(tmp_path / "runs" / "b.json"), durable=False)
    fresh = [p for p in (tmp_path / "snapshots").glob("*.json") if p != full]
    assert len(fresh) == 1 and os.stat(fresh[0]).st_ino == os.stat(tmp_path / "runs" / "b.json").st_ino
    assert os.stat(full).st_nlink == 2  # a.json and itself: b.json went to the fresh one

    def no_links(src: str, dst: str) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    snapshots.place("pool text", str(tmp_path / "runs" / "c.json"), durable=False)
    plain = tmp_path / "runs" / "c.json"
    assert plain.read_text() == "pool text" and os.stat(plain).st_nlink == 1
    assert not list((tmp_path / "snapshots").glob("*.tmp"))  # no half-made snapshot left behind
