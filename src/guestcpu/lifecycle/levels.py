"""x86-64-v1 … v4 as guest CPU models: a real QEMU base model plus the level's features (pure but for the data file).

QEMU ships no ``x86-64-vN`` model.  A guest that asks for one gets ``qemu64`` (on
every QEMU, under KVM and TCG) with every feature of the level and the levels below
required, and ``svm`` off, so that one CPU runs on Intel and AMD hosts alike.  The
pin then spells out what the guest sees: vendor, family, model and model-id are
qemu64's.  The level table is data (``data/x86-64-levels.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from guestcpu.catalog.catalog import Catalog
from guestcpu.model.cpu import CpuDefinition, FeatureRequest, Policy


@dataclass(frozen=True)
class Level:
    name: str
    number: int
    #: this level's own features (not the ones below)
    own: tuple[str, ...]
    #: every feature the level requires (cumulative)
    features: tuple[str, ...]


@dataclass(frozen=True)
class LevelTable:
    levels: tuple[Level, ...]
    base_model: str
    base_disable: tuple[str, ...]
    source: str

    def find(self, name: str | None) -> Level | None:
        for level in self.levels:
            if name is not None and level.name.lower() == name.lower():
                return level
        return None

    def bits(self, level: Level, catalog: Catalog) -> int:
        return catalog.bits(level.features, level.name)

    def highest(self, offered: int, catalog: Catalog) -> Level | None:
        """The highest level whose every feature is in ``offered`` (catalog bits); None: not even v1."""
        best = None
        for level in self.levels:
            if self.bits(level, catalog) & ~offered:
                break
            best = level
        return best


@cache
def level_table() -> LevelTable:
    doc: dict[str, Any] = json.loads(
        resources.files("guestcpu.lifecycle").joinpath("data/x86-64-levels.json").read_text())
    levels: list[Level] = []
    seen: list[str] = []
    for number, entry in enumerate(doc["levels"], start=1):
        own = tuple(entry["features"])
        seen += own
        levels.append(Level(entry["name"], number, own, tuple(seen)))
    return LevelTable(tuple(levels), doc["base_model"], tuple(doc["base_disable"]), doc["source"])


def level_cpu(cpu: CpuDefinition, catalog: Catalog) -> CpuDefinition:
    """``cpu`` itself, or for a ``<model>x86-64-vN</model>`` the base model with the level's features explicit.

    The guest's own ``<feature>`` elements still apply on top (they come last).
    """
    table = level_table()
    level = table.find(cpu.model)
    if level is None:
        return cpu
    requests = [FeatureRequest(catalog.feature(n).name, Policy.REQUIRE) for n in level.features]
    requests += [FeatureRequest(catalog.feature(n).name, Policy.DISABLE) for n in table.base_disable]
    named = {r.name for r in cpu.features}
    features = tuple(r for r in requests if r.name not in named) + tuple(cpu.features)
    return cpu.with_(model=table.base_model, features=features)
