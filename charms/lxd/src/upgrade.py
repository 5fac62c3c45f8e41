"""The rolling upgrade: one plan in the peer relation, one member at a time.

The ``upgrade`` action (leader) records an :class:`UpgradePlan`; it does not wait for the
rollout. Every unit reads the whole rollout (:class:`Rollout`: the plan, who has done it,
who failed) in its own hooks and, when its turn comes, runs its steps
(:class:`MemberUpgrade`): evacuate → refresh → wait until healthy → restore. Finishing
wakes the next unit (its peer relation-changed); a failure stops the rollout until the
operator runs ``upgrade`` again. Never imports ``ops``: the charm wires it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from charm_common.relation_data import unit_number
from installer import Installer, InstallError
from lxd import LXD, LXDError

logger = logging.getLogger(__name__)

EVACUATE, REFRESH, HEALTHCHECK, RESTORE = "evacuate", "refresh", "healthcheck", "restore"
# How long a refreshed member may take to answer and rejoin the cluster, and how often we look.
HEALTH_TIMEOUT = 300.0
HEALTH_INTERVAL = 5.0
# Right after a member's daemon restarts, LXD refuses to restore it for a while, each time
# differently (measured on 5.0.2: "Target node is offline" until the database leader sees a
# fresh heartbeat, though it lists the member EVACUATED; "Missing event connection with
# target cluster member" until the members reconnect): restoring is retried this long.
RESTORE_TIMEOUT = 120.0


class UpgradeRefusedError(Exception):
    """The upgrade action cannot start a rollout now (the message says why)."""


class ClusterNotReadyError(Exception):
    """The cluster has problems elsewhere: this member must not be taken out now."""

    def __init__(self, problems: Iterable[str]):
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


class UpgradeStepError(Exception):
    """A step of this member's upgrade failed: the rollout stops here."""

    def __init__(self, step: str, reason: str):
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


@dataclass(frozen=True)
class UpgradePlan:
    """What the leader records: which rollout, to which channel, in which order.

    ``channel`` is empty for the distro package (no channels: the archive decides).
    ``attempt`` grows each time the operator resumes a stopped rollout.
    """

    id: str
    channel: str
    order: tuple[str, ...]
    attempt: int = 1

    def to_json(self) -> str:
        """The peer-data form."""
        return json.dumps(
            {
                "id": self.id,
                "channel": self.channel,
                "order": list(self.order),
                "attempt": self.attempt,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> UpgradePlan:
        """Parse the peer-data form (written by the leader)."""
        raw = json.loads(text)
        return cls(
            id=str(raw["id"]),
            channel=str(raw["channel"]),
            order=tuple(str(u) for u in raw["order"]),
            attempt=int(raw["attempt"]),
        )

    @property
    def target(self) -> str:
        """What the rollout upgrades to, for messages."""
        return self.channel or "the distro package's newest version"


@dataclass(frozen=True)
class UpgradeFailure:
    """What a unit records when one of its steps failed."""

    id: str
    attempt: int
    reason: str
    step: str

    def to_json(self) -> str:
        """The peer-data form."""
        return json.dumps(
            {"id": self.id, "attempt": self.attempt, "reason": self.reason, "step": self.step}
        )

    @classmethod
    def from_json(cls, text: str) -> UpgradeFailure:
        """Parse the peer-data form (written by the failed unit)."""
        raw = json.loads(text)
        return cls(
            id=str(raw["id"]),
            attempt=int(raw["attempt"]),
            reason=str(raw["reason"]),
            step=str(raw["step"]),
        )

    @property
    def left_evacuated(self) -> bool:
        """Whether the member stays evacuated (it failed after its evacuation)."""
        return self.step != EVACUATE


@dataclass(frozen=True)
class Rollout:
    """A plan and how far it got, as every unit sees it in the peer relation.

    Units in the plan's order that are no longer in the relation are skipped: they can
    neither upgrade nor hold the others back.
    """

    plan: UpgradePlan
    done: Mapping[str, str]  # unit -> id of the last upgrade it completed
    failures: Mapping[str, UpgradeFailure]  # unit -> its last failure
    present: frozenset[str]

    @property
    def units(self) -> tuple[str, ...]:
        """The units still to consider, in upgrade order."""
        return tuple(u for u in self.plan.order if u in self.present)

    def has_done(self, unit: str) -> bool:
        """Whether ``unit`` completed this rollout."""
        return self.done.get(unit) == self.plan.id

    @property
    def done_count(self) -> int:
        """How many of :attr:`units` completed this rollout."""
        return sum(1 for u in self.units if self.has_done(u))

    @property
    def progress(self) -> str:
        """``2/3`` — done of the units to consider."""
        return f"{self.done_count}/{len(self.units)}"

    @property
    def complete(self) -> bool:
        """Whether every unit still present has done it."""
        return self.done_count == len(self.units)

    @property
    def current(self) -> str | None:
        """The unit whose turn it is (the first one not done), ``None`` when complete."""
        return next((u for u in self.units if not self.has_done(u)), None)

    @property
    def failure(self) -> tuple[str, UpgradeFailure] | None:
        """The unit that stopped this attempt, and why (``None`` while nothing failed)."""
        for unit in self.units:
            failure = self.failures.get(unit)
            if failure and (failure.id, failure.attempt) == (self.plan.id, self.plan.attempt):
                return unit, failure
        return None

    def turn_of(self, unit: str) -> bool:
        """Whether ``unit`` upgrades now: every unit before it is done and nothing failed."""
        return self.current == unit and self.failure is None


def upgrade_order(units: Iterable[str], leader: str) -> tuple[str, ...]:
    """Units by number, the leader last (it drives the rollout and records the plan)."""
    ordered = sorted(set(units), key=unit_number)
    last = (leader,) if leader in ordered else ()
    return tuple(u for u in ordered if u != leader) + last


def next_plan(
    current: Rollout | None, channel: str, units: Iterable[str], leader: str
) -> tuple[UpgradePlan, str]:
    """The plan the upgrade action records, and the unit it resumes at ('' when new).

    A stopped rollout to the same channel resumes: same id, next attempt, same order (done
    units are skipped, the failed one retries). Anything else is a new rollout, unless one
    is still running; one that replaces a stopped rollout starts with the unit that
    stopped it, whose member may still be evacuated: no other member may be taken out
    before it is back.

    Raises:
        UpgradeRefusedError: a rollout is in progress and nothing stopped it.
    """
    order = upgrade_order(units, leader)
    if current is not None and not current.complete:
        failure = current.failure
        if failure is None:
            raise UpgradeRefusedError(
                f"an upgrade to {current.plan.target} is in progress "
                f"({current.progress} done, now {current.current})"
            )
        if channel == current.plan.channel:
            return replace(current.plan, attempt=current.plan.attempt + 1), failure[0]
        stopped_at = failure[0]
        order = (stopped_at, *(u for u in order if u != stopped_at))
    previous = int(current.plan.id) if current is not None else 0
    return UpgradePlan(id=str(previous + 1), channel=channel, order=order), ""


def mentions(problem: str, member: str) -> bool:
    """Whether ``problem`` names ``member`` (``lxd-1`` is not ``lxd-10``)."""
    return re.search(rf"(?<![\w-]){re.escape(member)}(?![\w-])", problem) is not None


class MemberUpgrade:
    """The upgrade of this unit's own member, step by step; every step can run again.

    A member evacuated by an earlier attempt is evacuated already (LXD says so and
    nothing moves); a refresh to the revision already installed changes nothing.
    """

    def __init__(
        self,
        lxd: LXD,
        installer: Installer,
        member: str,
        *,
        clustered: bool,
        progress: Callable[[str], None],
        timeout: float = HEALTH_TIMEOUT,
        interval: float = HEALTH_INTERVAL,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._lxd = lxd
        self._installer = installer
        self._member = member
        self._clustered = clustered
        self._progress = progress
        self._timeout = timeout
        self._interval = interval
        self._sleep = sleep
        self._clock = clock

    def problems_elsewhere(self) -> list[str]:
        """What is wrong with the cluster apart from this member.

        Every problem the cluster reports that does not name this member, and every
        other member that is evacuated: the upgrade never empties a second member.
        """
        problems = [p for p in self._lxd.cluster_health() if not mentions(p, self._member)]
        for member in self._lxd.members():
            reported = any(mentions(p, member.name) for p in problems)
            if member.name != self._member and member.evacuated and not reported:
                problems.append(f"member {member.name} is evacuated")
        return problems

    def run(self, plan: UpgradePlan, cohort: str) -> None:
        """Evacuate, refresh, wait until healthy, restore (a standalone server: refresh, wait).

        Raises:
            ClusterNotReadyError: another member has a problem; nothing was done.
            UpgradeStepError: a step failed; the member is left as that step left it
                (evacuated, when the step came after the evacuation).
        """
        if self._clustered:
            problems = self.problems_elsewhere()
            if problems:
                raise ClusterNotReadyError(problems)
            self._step(EVACUATE, lambda: self._lxd.evacuate(self._member))
        self._step(REFRESH, lambda: self._installer.refresh(plan.channel, cohort))
        self._step(HEALTHCHECK, self._wait_until_healthy)
        if self._clustered:
            self._step(RESTORE, self._restore)

    def _restore(self) -> None:
        """Restore this member, retrying while LXD is not ready to take its instances back.

        A restore that failed leaves the member evacuated, so trying again is safe; but LXD
        stops an instance before moving it and a failed move leaves it stopped (measured),
        and the next restore moves it without starting it: whatever ran before the first
        attempt is started again afterwards.
        """
        running = {
            k for k, (_, status) in self._lxd.instance_locations().items() if status == "Running"
        }
        deadline = self._clock() + RESTORE_TIMEOUT
        while True:
            try:
                self._lxd.restore(self._member)
                break
            except LXDError as exc:
                if self._clock() >= deadline:
                    raise
                logger.info("restoring %s failed, retrying: %s", self._member, exc)
            self._sleep(self._interval)
        for key, (_, status) in sorted(self._lxd.instance_locations().items()):
            if key in running and status != "Running":
                logger.info("starting %s, which ran before the restore", key)
                self._lxd.start_instance(key)

    def _step(self, step: str, action: Callable[[], object]) -> None:
        self._progress(step)
        try:
            action()
        except (LXDError, InstallError) as exc:
            raise UpgradeStepError(step, str(exc)) from None

    def _wait_until_healthy(self) -> None:
        deadline = self._clock() + self._timeout
        while True:
            problems = self._unhealthy()
            if not problems:
                return
            if self._clock() >= deadline:
                raise UpgradeStepError(
                    HEALTHCHECK,
                    f"not healthy {self._timeout:.0f} s after the refresh: {'; '.join(problems)}",
                )
            self._sleep(self._interval)

    def _unhealthy(self) -> list[str]:
        """Why this member cannot be restored yet ([] when it can)."""
        try:
            self._lxd.server_info(refresh=True)  # it answers
            if not self._clustered:
                return []
            own = next((m for m in self._lxd.members() if m.name == self._member), None)
            problems = self.problems_elsewhere()
        except LXDError as exc:
            return [f"LXD does not answer: {exc}"]
        if own is None:
            problems.insert(0, f"{self._member} is not listed as a cluster member")
        elif not (own.online or own.evacuated):
            problems.insert(0, f"member {self._member} is {own.status}")
        return problems
