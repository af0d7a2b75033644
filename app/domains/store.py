"""Profiles persisted as one JSON file per domain under ``<data_dir>/domains`` (atomic writes).

Example profiles shipped in ``prompts/profiles/`` are installed on first start; one an admin
deletes is remembered in ``.seeded`` and not installed again.

A profile file that cannot be read (corrupt, or hand-edited into something invalid) must not
keep the service from starting: it is moved to ``<root>/set-aside/`` with a timestamp, logged,
and reported in ``warnings`` (listed by ``GET /v1/domains``) until an admin puts a new profile.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import prompts
from app.protocol.profiles import DomainProfile, DomainProfileIn
from indexers.durable import write_text_durably

log = logging.getLogger(__name__)
SEEDS = Path(prompts.__file__).resolve().parent / "profiles"


class ProfileStore:
    def __init__(self, root: Path, seeds: Path | None = SEEDS) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._profiles: dict[str, DomainProfile] = {}
        #: Profiles that could not be loaded and were set aside: name -> what happened.
        self.warnings: dict[str, str] = {}
        for path in sorted(root.glob("*.json")):
            try:
                profile = DomainProfile.model_validate_json(path.read_text(encoding="utf-8"))
                if profile.name != path.stem:
                    raise ValueError(f"it names the domain {profile.name!r}")
            except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
                self._set_aside(path, exc)
                continue
            self._profiles[profile.name] = profile
        if seeds is not None:
            self._seed(seeds)

    def _set_aside(self, path: Path, exc: Exception) -> None:
        aside = self.root / "set-aside"
        aside.mkdir(exist_ok=True)
        target = aside / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}"
        os.replace(path, target)
        first = " ".join(str(exc).split())[:300]
        message = f"profile file {path.name} could not be loaded ({first}); moved to {target}"
        log.warning("%s", message)
        self.warnings[path.stem] = message

    def _seed(self, seeds: Path) -> None:
        marker = self.root / ".seeded"
        done = set(marker.read_text().split()) if marker.exists() else set()
        for path in sorted(seeds.glob("*.json")):
            name = path.stem
            if name in done or name in self._profiles:
                continue
            self.put(name, DomainProfileIn.model_validate_json(path.read_text(encoding="utf-8")))
            done.add(name)
        write_text_durably(marker, "\n".join(sorted(done)) + "\n")

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._profiles)

    def get(self, name: str) -> DomainProfile | None:
        with self._lock:
            return self._profiles.get(name)

    def put(self, name: str, body: DomainProfileIn) -> tuple[DomainProfile, bool]:
        """Create or replace; the version grows by one on every replace. Returns (profile, created)."""
        with self._lock:
            old = self._profiles.get(name)
            now = time.time()
            profile = DomainProfile(
                **body.model_dump(),
                name=name,
                version=(old.version + 1) if old else 1,
                created_at=old.created_at if old else now,
                updated_at=now,
            )
            write_text_durably(self.root / f"{name}.json", profile.model_dump_json(indent=2))
            self._profiles[name] = profile
            self.warnings.pop(name, None)
            return profile, old is None

    def delete(self, name: str) -> bool:
        with self._lock:
            if self._profiles.pop(name, None) is None:
                return False
            (self.root / f"{name}.json").unlink(missing_ok=True)
            return True
