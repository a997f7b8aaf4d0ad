"""Run files: resumable JSONL whose first line says what produced them.

    run = RunFile.open(path, settings, restart=False)   # -> the records already there
    run.append([record, ...])                            # one write, flushed

The first line is `{"ponder_run": {...settings, "version": ...}}`: task and its options,
strategy, n, options, verifier and its options, model, seed, temperature (whatever the runner
passes). Opening an existing file checks it:
- a file whose first line is not a ponder run header is never written to (ValueError);
- a run made with other settings is not resumed: ValueError naming each setting that differs
  (old and new value), unless `restart=True`, which starts the file anew;
- a torn last line (a kill mid-write) is dropped, so appending cannot glue onto it.
The records' own meaning (one per problem, or one per sample in groups) is the runner's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

HEADER_KEY = "ponder_run"


def _jsonable(settings: dict) -> dict:
    return json.loads(json.dumps(settings, default=str))


@dataclass
class RunFile:
    path: Path
    settings: dict
    records: list[dict]

    @staticmethod
    def check(path: Path, settings: dict, *, restart: bool = False) -> None:
        """What `open` would refuse, without writing anything."""
        settings = {**_jsonable(settings), "version": version("ponder")}
        if restart:
            if run_header(path) is None:
                raise ValueError(
                    f"{path} is not a ponder run file; --restart will not overwrite it"
                )
        else:
            read_run(path, settings)

    @classmethod
    def open(cls, path: Path, settings: dict, *, restart: bool = False) -> RunFile:
        path = Path(path)
        settings = {**_jsonable(settings), "version": version("ponder")}
        if path.exists() and path.stat().st_size and not restart:
            records, torn = read_run(path, settings)
            run = cls(path, settings, records)
            if torn:
                run.rewrite(records)
            return run
        if path.exists() and path.stat().st_size and run_header(path) is None:
            raise ValueError(f"{path} is not a ponder run file; --restart will not overwrite it")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({HEADER_KEY: settings}) + "\n")
        return cls(path, settings, [])

    def append(self, records: list[dict]) -> None:
        """Append whole records with one write, flushed, so a kill leaves whole lines."""
        with self.path.open("a") as sink:
            sink.write("".join(json.dumps(r) + "\n" for r in records))
            sink.flush()
            os.fsync(sink.fileno())
        self.records += records

    def rewrite(self, records: list[dict]) -> None:
        """Replace the records (keeping the header) atomically, e.g. to drop a torn group."""
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        lines = [json.dumps({HEADER_KEY: self.settings})] + [json.dumps(r) for r in records]
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.path)
        self.records = list(records)


def run_header(path: Path) -> dict | None:
    """The settings in a run file's header; None when its first line is not one."""
    with path.open("rb") as source:
        first = source.readline()
    try:
        header = json.loads(first)[HEADER_KEY]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return None
    return header if isinstance(header, dict) else None


def read_run(path: Path, settings: dict) -> tuple[list[dict], bool]:
    """The records of an existing run file made with `settings`, and whether its last line was
    torn; ValueError when it is not a ponder run or was made with other settings."""
    lines = path.read_text(errors="replace").splitlines()
    header = run_header(path)
    if header is None:
        raise ValueError(
            f"{path} is not a ponder run file (its first line is not a run header); "
            "choose another output file"
        ) from None
    differ = [
        f"{key}: {header.get(key)!r} in the file, {settings.get(key)!r} now"
        for key in sorted(set(header) | set(settings))
        if key != "version" and header.get(key) != settings.get(key)
    ]
    if differ:
        raise ValueError(
            f"{path} holds a run made with other settings ({'; '.join(differ)}); "
            "resume with the same settings, choose another output file, or pass --restart"
        )
    records, torn = [], not path.read_bytes().endswith(b"\n")
    for number, line in enumerate(lines[1:], start=2):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                torn = True  # a killed run's last, partial line
                break
            raise ValueError(f"{path}:{number} is not a JSON record") from None
        if not isinstance(record, dict) or "id" not in record:
            raise ValueError(f"{path}:{number} is not a ponder record (no 'id')")
        records.append(record)
    return records, torn
