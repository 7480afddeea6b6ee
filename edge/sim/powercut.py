"""A power cut staged for the agent's data directory: the agent runs under scripts/powercut.c, which keeps each file of
the directory as its last fsync left it; after a SIGKILL, ``PowerCut.cut`` puts the database's files back to that.

A SIGKILL alone keeps the page cache (every write() survives it, synced or not); a power cut keeps only what was
fsynced. The model and its limits: scripts/powercut.c's header, docs/testing.md."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
# The database's files; the rest of the data directory (the lock, caches, the last-failure note) carries no promise.
DATABASE_FILES = ("edge.db", "edge.db-wal", "edge.db-journal")


def build_shim(cache: Path, source: str = "powercut.c") -> Path:
    """Compiles an LD_PRELOAD shim of scripts/ (this one, or the bench's slowfsync.c) into ``cache``. Raises with the
    compiler's words when it cannot: a power-cut test that skipped without a compiler would pass on a machine where
    nothing was checked (the bench says so and goes on)."""
    out = cache / Path(source).with_suffix(".so").name
    command = ["cc", "-shared", "-fPIC", "-O2", "-o", str(out), str(SCRIPTS / source), "-ldl", "-lpthread"]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"cc failed on {source}: {err.stderr}") from err
    except (OSError, subprocess.TimeoutExpired) as err:  # no cc at all, or one that hangs
        raise RuntimeError(f"no working C compiler (cc) to build {source}: {err}") from err
    return out


@dataclasses.dataclass(frozen=True)
class PowerCut:
    """The shim at ``shim`` watching ``data_dir``; what each file's last fsync made durable kept in ``snapshots``;
    each of those fsyncs ``sync_ms`` slower (an SD card's 10 ms: the window in which a commit is not yet durable)."""

    shim: Path
    data_dir: Path
    snapshots: Path
    sync_ms: int = 0

    def env(self) -> dict[str, str]:
        """The environment for an agent process (``AgentProcess(env=...)``) whose syncs are recorded."""
        self.snapshots.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)  # the shim finds it at its first sync, or watches nothing
        return {
            "LD_PRELOAD": str(self.shim),
            "POWERCUT_DIR": str(self.data_dir),
            "POWERCUT_SNAPSHOT_DIR": str(self.snapshots),
            "POWERCUT_SYNC_MS": str(self.sync_ms),
        }

    def cut(self, names: tuple[str, ...] = DATABASE_FILES) -> dict[str, int]:
        """The power goes (the agent must be dead already, or it writes on): each of ``names`` that is there becomes
        what its last fsync made durable, or goes if it was never synced; SQLite's -shm files go (shared memory, never
        on disk). A file already deleted stays deleted (an unlink is taken as durable at once). Blocking file work:
        call it in a thread from an event loop. Returns the bytes each file kept."""
        kept: dict[str, int] = {}
        for name in names:
            snapshot, path = self.snapshots / name, self.data_dir / name
            if not path.exists():
                continue
            if snapshot.exists():
                shutil.copyfile(snapshot, path)
                kept[name] = snapshot.stat().st_size
            else:
                path.unlink(missing_ok=True)
        for shm in self.data_dir.glob("*-shm"):
            shm.unlink()
        return kept
