"""The run home (`.baton/`, `--home`, `$BATON_HOME`): the one owner of its layout.

    .baton/
      runs/<run-id>/     one folder a run (engine.run.store writes it, engine.run.reader reads it)
      evals/<eval-id>/   one folder an evaluation: results.jsonl (a journal), report.json
      cache/             the response cache
      snapshots/         texts many runs record alike (a server's pool, a served flow), hard-linked into them

Run ids sort by time (`20261201-094401-9b87ba`); a unique prefix names a run. A process
running a run holds the lock on its folder (or on its `run.lock`, where a folder cannot be
locked), so a reader can tell a run in flight from one whose process was killed.

Creating a file is the dearest thing a served call does on a disk like ext4 (0.05 to 0.25 ms
of kernel time each, against 0.01 ms for a hard link): the lock on the folder and the linked
snapshots (`engine.run.snapshots`) spare a run the files it used to create for them.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from glob import escape as glob_escape
from pathlib import Path

from engine.errors import HomeError, InputError, UnknownRun
from engine.run.snapshots import Snapshots

DEFAULT_HOME = ".baton"
STEP_JOURNAL = "steps.jsonl"
RESULTS_JOURNAL = "results.jsonl"


def baton_home(explicit: str | Path | None = None) -> Path:
    return Path(explicit or os.environ.get("BATON_HOME") or DEFAULT_HOME)


def usable_home(explicit: str | Path | None = None) -> Path:
    """The run home, which must be a folder (or not exist yet): a file there is a `HomeError`, not a traceback."""
    root = baton_home(explicit)
    for path in (root, root / "runs"):
        if path.exists() and not path.is_dir():
            raise HomeError(f"the run home {root} cannot be used: {path} is a file, not a folder (see --home / $BATON_HOME)")
    return root


def find_run(root: Path, run_id: str) -> Path:
    """A run's folder by its id or a unique prefix of it; `UnknownRun` names the matches of an ambiguous prefix."""
    runs = root / "runs"
    if not run_id or "/" in run_id or run_id in (".", ".."):
        raise UnknownRun(run_id)
    exact = runs / run_id
    if _is_run_folder(exact):
        return exact
    matches = sorted(p.name for p in runs.glob(f"{glob_escape(run_id)}*") if _is_run_folder(p)) if runs.is_dir() else []
    if len(matches) == 1:
        return runs / matches[0]
    raise UnknownRun(run_id, matches)


def _is_run_folder(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in ("summary.json", STEP_JOURNAL, "flow.flow"))


RUN_LOCK = "run.lock"


def hold_run_lock(run_dir: Path, run_id: str, new: bool = False) -> int | None:
    """Lock the run's folder for as long as this process runs the run (the OS drops it when the process dies).

    Readers tell a run in flight from one whose process was killed by trying the lock
    (`run_is_live`); two processes cannot resume the same run at once. A `new` run's folder was
    just made by this process, so nothing else can run it: its lock is waited for, as a reader
    may hold it shared for a moment. Where a folder cannot be locked (some network file
    systems), a `run.lock` file in it is.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no liveness check
        return None
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        if new:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            _lock_soon(fd)
    except BlockingIOError:
        os.close(fd)
        raise HomeError(f"run {run_id} is being run by another process right now") from None
    except OSError:
        os.close(fd)
        return _hold_lock_file(run_dir, run_id)
    if not new and (run_dir / RUN_LOCK).exists():  # a run begun where folders could not be locked, or by an older Baton
        try:
            os.close(_hold_lock_file(run_dir, run_id))
        except HomeError:
            os.close(fd)
            raise
    return fd


def _lock_soon(fd: int, tries: int = 20, pause_s: float = 0.01) -> None:
    """The exclusive lock, if it is free within a moment: a reader (`run_is_live`) holds it shared for microseconds,
    a process running the run holds it for as long as the run; `BlockingIOError` if it stays taken."""
    import fcntl

    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == tries - 1:
                raise
            time.sleep(pause_s)


def _hold_lock_file(run_dir: Path, run_id: str) -> int:
    fd = os.open(run_dir / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock_soon(fd)
    except BlockingIOError:
        os.close(fd)
        raise HomeError(f"run {run_id} is being run by another process right now") from None
    return fd


def run_is_live(run_dir: Path) -> bool:
    """Whether a process is running this run now: the lock on its folder, or on its `run.lock`, is held."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return True
    for path in (run_dir, run_dir / RUN_LOCK):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # no lock file: a folder that can be locked, or a run from before locks
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            continue
        finally:
            os.close(fd)
    return False


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)




class RunHome:
    """The folders of one home; nothing is created until something is written."""

    def __init__(self, explicit: str | Path | None = None) -> None:
        self.root = usable_home(explicit)
        self._runs_made = False  # `runs/` is made once, not checked again for every run a server records
        self.snapshots = Snapshots(self.root / "snapshots")

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def evals(self) -> Path:
        return self.root / "evals"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def find_run(self, run_id: str) -> Path:
        return find_run(self.root, run_id)

    def new_run(self, run_id: str | None = None) -> Path:
        """A new run's folder, created; never one that exists (two runs started in one second by a server)."""
        for _ in range(20):
            folder = self.runs / (run_id or new_run_id())
            try:
                if self._runs_made and self._made_in_runs(folder):
                    return folder
                self._created(folder, "a run folder", exist_ok=False)
                self._runs_made = True
                return folder
            except FileExistsError:
                if run_id is not None:
                    raise HomeError(f"run {run_id} already exists in {self.root}") from None
        raise HomeError(f"cannot find a free run id in {self.root}")  # pragma: no cover - 20 clashes of 32 random bits

    def _made_in_runs(self, folder: Path) -> bool:
        """`folder` made inside `runs/`, which was there a moment ago; False if it has gone since (it is made again)."""
        try:
            folder.mkdir()
        except FileNotFoundError:
            return False
        except FileExistsError:
            raise
        except OSError as err:
            raise HomeError(f"cannot create a run folder in {self.root}: {err.strerror}") from None
        return True

    def _created(self, folder: Path, what: str, exist_ok: bool = True) -> Path:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            folder.mkdir(exist_ok=exist_ok)
        except FileExistsError:
            raise
        except OSError as err:
            raise HomeError(f"cannot create {what} in {self.root}: {err.strerror}") from None
        return folder

    def run_folders(self) -> Iterator[Path]:
        """Every run's folder, newest first."""
        if not self.runs.is_dir():
            return
        for folder in sorted(self.runs.iterdir(), reverse=True):
            if _is_run_folder(folder):
                yield folder

    def eval_folder(self, eval_id: str | None = None, resume: str | None = None) -> Path:
        """An evaluation's folder: `resume` must exist (a mistyped id used to start a new evaluation under it)."""
        if resume is not None:
            folder = self.evals / resume
            if not folder.is_dir():
                raise InputError(f"no evaluation {resume!r} to resume in {self.evals}")
            return folder
        return self._created(self.evals / (eval_id or new_run_id()), "an evaluation folder")
