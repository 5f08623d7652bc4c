"""The inventory's tables (SQLAlchemy 2 typed ORM); ``migrations/`` creates and upgrades them.

* ``clusters``: a named group of hosts, optionally frozen to a CPU (a pin, like EVC);
* ``hosts``: a host's name, cluster, tags, admission status and current state;
* ``host_states``: every state a host was added with, oldest first (its history),
  each with what changed from the one before;
* ``profiles``: what one QEMU under one accelerator offers, a capabilities document
  shared by every host state that has exactly it;
* ``pins``: guests' pinned CPUs, optionally with the host they run on: each guest's
  name and UUID, and its pin document without them as a ``pin_bodies`` row that every
  guest pinned to the same CPU shares.
"""

from __future__ import annotations

import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: the Alembic revision these classes describe (the newest migration)
SCHEMA_REVISION = "0003_pin_bodies"


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[str]: JSON}


class Cluster(Base):
    __tablename__ = "clusters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    frozen_pin_id: Mapped[int | None] = mapped_column(ForeignKey("pins.id", use_alter=True, name="fk_cluster_pin"))

    hosts: Mapped[list[Host]] = relationship(back_populates="cluster")
    frozen_pin: Mapped[Pin | None] = relationship(foreign_keys=[frozen_pin_id])


class Profile(Base):
    __tablename__ = "profiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(80), unique=True)
    accel: Mapped[str] = mapped_column(String(16))
    qemu_version: Mapped[str] = mapped_column(String(100))
    verified: Mapped[bool] = mapped_column(Boolean)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)


class Host(Base):
    __tablename__ = "hosts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id"), index=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: False: admitted with --force into a frozen cluster whose CPU it cannot give
    operational: Mapped[bool] = mapped_column(Boolean, default=True)
    status_note: Mapped[str] = mapped_column(Text, default="")
    current_state_id: Mapped[int | None] = mapped_column(
        ForeignKey("host_states.id", use_alter=True, name="fk_host_current_state"))
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    cluster: Mapped[Cluster] = relationship(back_populates="hosts")
    current: Mapped[HostState | None] = relationship(foreign_keys=[current_state_id], post_update=True)


class HostState(Base):
    __tablename__ = "host_states"
    __table_args__ = (UniqueConstraint("host_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    source: Mapped[str] = mapped_column(String(32))
    hostname: Mapped[str] = mapped_column(String(255), default="")
    kernel: Mapped[str] = mapped_column(String(255), default="")
    captured_at: Mapped[str] = mapped_column(String(64), default="")
    qemu_version: Mapped[str] = mapped_column(String(100), default="")
    cpu: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    unavailable: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    kvm_profile_id: Mapped[int | None] = mapped_column(ForeignKey("profiles.id"))
    tcg_profile_id: Mapped[int | None] = mapped_column(ForeignKey("profiles.id"))
    #: what differs from the state before (empty for the first)
    changes: Mapped[list[str]] = mapped_column(JSON, default=list)

    host: Mapped[Host] = relationship(foreign_keys=[host_id])
    kvm_profile: Mapped[Profile | None] = relationship(foreign_keys=[kvm_profile_id])
    tcg_profile: Mapped[Profile | None] = relationship(foreign_keys=[tcg_profile_id])


class PinBody(Base):
    """A pin document without the guest's name and UUID, shared by every guest pinned to that CPU."""

    __tablename__ = "pin_bodies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(80), unique=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)


class Pin(Base):
    __tablename__ = "pins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    fingerprint: Mapped[str] = mapped_column(String(80), index=True)
    body_id: Mapped[int] = mapped_column(ForeignKey("pin_bodies.id", name="fk_pin_body"), index=True)
    #: the name and UUID the pin document gives its guest (``guestcpu define`` records them)
    guest_name: Mapped[str | None] = mapped_column(Text)
    guest_uuid: Mapped[str | None] = mapped_column(String(64))
    #: the host the guest runs on, when known
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id", use_alter=True, name="fk_pin_host"), index=True)
    added_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    body: Mapped[PinBody] = relationship(foreign_keys=[body_id])
    host: Mapped[Host | None] = relationship(foreign_keys=[host_id])
