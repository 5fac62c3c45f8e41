"""The lab's runner: it fires a :class:`~lab.model.Model`'s queued hooks as Juju's agents do.

A :class:`Runner` runs one hook at a time per machine (the principal and its subordinates
share the machine lock) and the machines at the same time, each hook through the built
charm's ``dispatch`` inside the unit's machine (:func:`lab.dispatch.run_hook`) on a thread
of its own, while the model changes only on the runner's thread. By default the machines
run freely (:meth:`Runner._run_free`): a machine starts its next hook as soon as its last
one ended, as a Juju machine agent does, so the interleaving follows the hooks' durations.
A model deployed with a seed (``lab deploy --seed``, ``LAB_SEED``) goes in lockstep rounds
instead (:meth:`Runner.round`): one unit per machine whose queue has a hook, in an order
drawn from the seed; the model changes only between the rounds' hooks, in that same order,
so the seed repeats the interleaving. A failed hook is retried with backoff (its changes
discarded) and leaves its unit in error after :data:`HOOK_ATTEMPTS`.

Every started unit has Juju's ``update-status`` timer: the hook is queued once the model's
``update-status-hook-interval`` (:meth:`Model.model_config`; Juju's default, 5 minutes,
unless set) has passed since the unit's last ``update-status`` (or its ``start``). The model
is idle as soon as no hook is queued or waits for a retry and no unit reports
``maintenance`` or ``waiting``; a unit that does waits for its timer. ``idle_period`` (as in
python-libjuju's ``wait_for_idle``) asks the model to stay so for that long, running the
timers that fall due. After the time bound the runner gives up with
:class:`NotSettledError`, naming the units still changing.

What a hook changes in the model, and which hooks follow from it, is the model's
(:mod:`lab.hookcontext`, :mod:`lab.uniter`); the runner decides only when hooks run.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from lab import dispatch, hookcontext, uniter
from lab.machines import Machine
from lab.model import Model, ModelError, make_event
from lab.state import UnitRecord

HOOK_LOG = "hooks.jsonl"  # under logs/: one JSON line per hook run (see Runner._log)
HOOK_ATTEMPTS = 4  # Juju retries a failed hook with backoff (2, 4, 8 s here), then gives up
DEFAULT_TIMEOUT = 900.0
TRANSIENT = ("maintenance", "waiting")


class Hook(NamedTuple):
    """A hook as it starts on unit ``name``: its event, request and what undoes the start."""

    name: str
    event: Mapping[str, Any]
    request: Mapping[str, Any]
    undo: Mapping[str, Any]


# Hooks running in the free-running runner, by their future.
Running = dict["concurrent.futures.Future[Any]", Hook]


class NotSettledError(ModelError):
    """The model kept changing until the time bound."""


class Runner:
    """Runs ``model``'s hooks; tells :attr:`progress` one line per unit status change."""

    def __init__(self, model: Model, progress: Callable[[str], None] | None = None):
        self.model = model
        self.progress = progress  # None: silent
        self.changing: set[str] = set()  # units whose hooks changed something lately
        self._shown: dict[str, tuple[str, ...]] = {}
        self._since = time.monotonic()

    @property
    def units(self) -> dict[str, UnitRecord]:
        """The model's units, whose queues the runner empties."""
        return self.model.units

    def _prepare(self, name: str) -> Hook | str:
        """Get unit ``name``'s next hook ready to run.

        Internal steps and hooks that no longer apply at the head of its queue are carried
        out or dropped first. Returns ``waiting`` (the unit waits for its subordinates to
        go) or ``skipped`` (nothing left to run) instead when there is no hook to run.
        """
        unit = self.units[name]
        while unit.queue:
            event = unit.queue[0]
            if event["name"].startswith("_"):
                unit.queue.pop(0)
                if not uniter.internal(self.model, name, event):
                    unit.queue.insert(0, event)
                    return "waiting"
                if name not in self.units:
                    return "skipped"  # the unit is gone
                continue
            if uniter.skip(self.model, name, event):
                unit.queue.pop(0)
                continue
            return self._start_hook(name, event)
        return "skipped"

    def _start_hook(self, name: str, event: Mapping[str, Any]) -> Hook:
        """Unit ``name`` starts ``event``'s hook."""
        undo = uniter.before_hook(self.model, name, event)
        request = hookcontext.request(self.model, name, event)
        self.units[name].agent = "executing"
        return Hook(name, event, request, undo)

    def _run(
        self, machine: Machine, request: Mapping[str, Any]
    ) -> tuple[dict[str, Any], float, float]:
        """Run the hook of ``request`` on ``machine``: (result, start, end).

        Runs on a worker thread: it neither reads nor changes the model.
        """
        started = time.time()
        result = dispatch.run_hook(machine, request)
        return result, started, time.time()

    def _finish(
        self, hook: Hook, run: tuple[dict[str, Any], float, float]
    ) -> tuple[str, dict[str, Any]]:
        """Keep what the hook did (nothing when it failed): (outcome, result).

        The outcome is ``changed`` or ``unchanged`` (the hook ran and changed something in
        the model or not) or ``failed``.
        """
        name, event, request, undo = hook
        result, started, ended = run
        self.model.state.hooks_run += 1
        self._log(name, event, result, started, ended)
        unit = self.units[name]
        if "error" in result:
            uniter.undo_before_hook(self.model, name, undo)  # a failed hook changes nothing
            if event["name"] != "action":  # an action is not retried
                self._failed(name, event, result["error"])
            return "failed", result
        if "action_failed" in result:
            return "unchanged", result
        changed = hookcontext.apply(self.model, name, request, result)
        if event["name"] != "action":
            unit.queue.pop(0)
            uniter.after_hook(self.model, name, event)
            unit.agent, unit.attempts, unit.error = "idle", 0, None
        return ("changed" if changed else "unchanged"), result

    def _log(
        self,
        name: str,
        event: Mapping[str, Any],
        result: Mapping[str, Any],
        started: float,
        ended: float,
    ) -> None:
        """Log the hook in ``logs/unit-<app>-<n>.log`` and in :data:`HOOK_LOG`.

        The unit's log gets the hook and what the charm logged; :data:`HOOK_LOG` a JSON line:
        unit, machine, hook, the runner's round, endpoint, outcome, start and end times,
        hook-tool calls.
        """
        what = event.get("action") or event["name"].replace("_", "-")
        detail = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("name", "params"))
        outcome = "failed" if ("error" in result or "action_failed" in result) else "ok"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        lines = [f"{stamp} {what} ({detail}) {outcome}", *result.get("log", [])]
        if "error" in result:
            lines.append(result["error"])
        logs = os.path.join(self.model.root, "logs")
        os.makedirs(logs, exist_ok=True)
        with open(os.path.join(logs, f"unit-{name.replace('/', '-')}.log"), "a") as f:
            f.write("\n".join(lines) + "\n")
        record = {
            "unit": name,
            "machine": self.units[name].machine,
            "hook": what,
            "round": self.model.state.rounds,
            "endpoint": self._endpoint_of(name, event.get("relation")),
            "outcome": outcome,
            "started": round(started, 3),
            "ended": round(ended, 3),
            "tool_calls": result.get("tool_calls", {}),
        }
        with open(os.path.join(logs, HOOK_LOG), "a") as f:
            f.write(json.dumps(record) + "\n")

    def _endpoint_of(self, name: str, rid: Any) -> str | None:
        """Unit ``name``'s endpoint of relation ``rid`` (None: no relation, or gone)."""
        if rid is None or str(rid) not in self.model.relations:
            return None
        return str(self.model.local_endpoint(str(rid), self.units[name].app).endpoint)

    def round(self, names: list[str]) -> dict[str, str]:
        """The next hook of each of ``names`` (units of different machines), all at once.

        What can change the model happens here, in ``names``' order: getting each hook
        ready, then keeping each one's result. Only the hooks themselves run at the same
        time, each on its own machine (on worker threads). Returns every unit's outcome:
        ``changed``, ``unchanged``, ``failed``, ``skipped`` or ``waiting`` (see
        :meth:`_prepare`, :meth:`_finish`).
        """
        machines = [self.units[n].machine for n in names]
        if len(set(machines)) != len(machines):
            raise ModelError(f"one hook at a time per machine: {names} share machines")
        self.model.state.rounds += 1
        outcomes: dict[str, str] = {}
        ready = []
        for name in names:
            prepared = self._prepare(name)
            if isinstance(prepared, str):
                outcomes[name] = prepared
            else:
                ready.append(prepared)
        self.model.save()
        if not ready:
            return outcomes
        with concurrent.futures.ThreadPoolExecutor(len(ready)) as pool:
            runs = [
                pool.submit(self._run, self.model.machine_of(h.name), h.request) for h in ready
            ]
            done = [future.result() for future in runs]
        for hook, run in zip(ready, done, strict=True):
            outcomes[hook.name] = self._end(hook, run)
        self.model.save()
        self._report()
        return outcomes

    def _end(self, hook: Hook, run: tuple[dict[str, Any], float, float]) -> str:
        """Keep what a queued hook did (:meth:`_finish`); its outcome."""
        name, event = hook.name, hook.event
        outcome, _ = self._finish(hook, run)
        if event["name"] == "update_status":
            self.units[name].timer = time.time()
            if outcome == "failed":  # not retried: Juju's timer comes back
                self.units[name].queue.pop(0)
        if outcome != "unchanged":
            self.changing.add(name)
        return outcome

    def _report(self) -> None:
        """Tell :attr:`progress` of every unit whose agent or workload status changed."""
        if self.progress is None:
            return
        for name, unit in self.units.items():
            shown = (unit.agent, *unit.status)
            if self._shown.get(name) == shown:
                continue
            self._shown[name] = shown
            agent, workload, message = shown
            self.progress(
                f"{time.monotonic() - self._since:6.1f}s  {self.model.state.hooks_run:4d} hooks  "
                f"{name}: {workload}{': ' + message if message else ''} ({agent})"
            )

    def step(self, name: str) -> str:
        """Run the next queued hook (or internal step) of unit ``name``; its outcome."""
        return self.round([name])[name]

    def _failed(self, name: str, event: Mapping[str, Any], error: str) -> None:
        unit = self.units[name]
        hook = event["name"].replace("_", "-")
        unit.attempts += 1
        unit.agent = "error"
        unit.error = f'hook failed: "{hook}": {error.strip().splitlines()[-1]}'
        unit.error_detail = error
        unit.retry_at = time.time() + 2.0**unit.attempts

    @staticmethod
    def _retrying(unit: UnitRecord) -> bool:
        return unit.agent == "error" and bool(unit.queue) and unit.attempts < HOOK_ATTEMPTS

    def _runnable(self) -> list[str]:
        now = time.time()
        return [
            name
            for name, unit in self.units.items()
            if unit.queue
            and (unit.agent != "error" or self._retrying(unit))
            and unit.retry_at <= now
            and not self.model.down(name)
        ]

    def _pick(self, runnable: list[str]) -> list[str]:
        """One unit per machine (Juju's machine lock), in an order drawn from the seed."""
        order = sorted(runnable)
        draw = random.Random(f"{self.model.seed}/{self.model.state.rounds}")  # noqa: S311
        draw.shuffle(order)  # an order, not a secret
        picked: dict[str, str] = {}
        for name in order:
            picked.setdefault(self.units[name].machine, name)
        return list(picked.values())

    def _timed(self, name: str) -> bool:
        """Whether unit ``name``'s ``update-status`` timer runs."""
        unit = self.units[name]
        return (
            unit.started
            and unit.life == "alive"
            and unit.agent != "error"
            and not self.model.down(name)
        )

    def _timer_dues(self) -> dict[str, float]:
        """When each timed unit's ``update-status`` timer falls due (epoch seconds)."""
        interval = self.model.update_status_interval
        return {
            name: unit.timer + interval for name, unit in self.units.items() if self._timed(name)
        }

    def _next_timer(self) -> float | None:
        """When the next ``update-status`` timer falls due (epoch seconds).

        A timer already due counts a full interval from now: :meth:`_fire_timers` queued it.
        """
        now, interval = time.time(), self.model.update_status_interval
        dues = [due if due > now else now + interval for due in self._timer_dues().values()]
        return min(dues, default=None)

    def _fire_timers(self) -> None:
        """Queue ``update-status`` on every unit whose timer is due."""
        now = time.time()
        for name, due in self._timer_dues().items():
            if due <= now:
                self.model.queue(name, make_event("update_status"))

    def _next_retry(self) -> float | None:
        """When the first failed hook that will be retried falls due (epoch seconds)."""
        return min((u.retry_at for u in self.units.values() if self._retrying(u)), default=None)

    def _await_retry(self, deadline: float) -> bool:
        """Sleep until the next retry falls due (not past ``deadline``); False: none to come."""
        retry = self._next_retry()
        if retry is None or time.monotonic() >= deadline:
            return False
        time.sleep(max(0.0, min(retry - time.time(), deadline - time.monotonic())))
        return True

    def _run_queued(self, deadline: float) -> bool:
        """Run queued hooks until none can run; whether any changed.

        Free-running (:meth:`_run_free`) unless the model was deployed with a seed to
        repeat (:meth:`_run_rounds`).
        """
        if self.model.state.lockstep:
            return self._run_rounds(deadline)
        return self._run_free(deadline)

    def _run_free(self, deadline: float) -> bool:
        """Run queued hooks as Juju's agents do, until none can run; whether any changed.

        Each machine starts its next hook as soon as its last one ended, whatever the other
        machines are doing. Only the hooks run at the same time (on worker threads); the
        model changes on this thread, as each hook starts and ends. Which unit of a machine
        goes next is drawn from the seed, but the interleaving follows the hooks' durations.
        """
        changed = False
        waiting: set[str] = set()  # they wait for another unit: let their machine run it
        running: Running = {}
        with concurrent.futures.ThreadPoolExecutor(max(1, len(self.model.lab.machines()))) as pool:
            while True:
                progressed = time.monotonic() < deadline and self._start_free(
                    pool, running, waiting
                )
                if running:
                    changed |= self._end_first(running)
                    waiting.clear()
                    continue
                if progressed:
                    waiting.clear()
                    continue
                if not self._await_retry(deadline):
                    return changed

    def _start_free(
        self, pool: concurrent.futures.Executor, running: Running, waiting: set[str]
    ) -> bool:
        """Start the next hook on every machine that runs none; whether internal steps ran."""
        self._fire_timers()
        busy = {self.units[hook.name].machine for hook in running.values()}
        free = [n for n in self._runnable() if n not in waiting]
        free = [n for n in free if self.units[n].machine not in busy]
        if not free:
            return False
        self.model.state.rounds += 1
        progressed = False
        for name in self._pick(free):
            prepared = self._prepare(name)
            if prepared == "waiting":
                waiting.add(name)
            elif isinstance(prepared, str):
                progressed = True  # internal steps were carried out, or dropped hooks
            else:
                running[pool.submit(self._run, self.model.machine_of(name), prepared.request)] = (
                    prepared
                )
        self.model.save()
        return progressed

    def _end_first(self, running: Running) -> bool:
        """Keep what the first hooks to end did; whether any changed something.

        Returns early (nothing ended) when a retry or an update-status timer falls due.
        """
        due = [d for d in (self._next_retry(), self._next_timer()) if d is not None]
        done, _ = concurrent.futures.wait(
            running,
            timeout=max(0.0, min(due, default=time.time() + 60.0) - time.time()) + 0.01,
            return_when=concurrent.futures.FIRST_COMPLETED,
        )
        changed = False
        for future in done:
            outcome = self._end(running.pop(future), future.result())
            changed |= outcome in ("changed", "failed")
        self.model.save()
        self._report()
        return changed

    def _run_rounds(self, deadline: float) -> bool:
        """Run queued hooks in rounds (:meth:`round`) until none can run; whether any changed.

        The model's seed repeats the interleaving.
        """
        changed = False
        waiting: set[str] = set()  # they wait for another unit: let their machine run it
        while time.monotonic() < deadline:
            self._fire_timers()
            picked = self._pick([n for n in self._runnable() if n not in waiting])
            if picked:
                outcomes = self.round(picked)
                changed |= any(o in ("changed", "failed") for o in outcomes.values())
                waiting |= {n for n, o in outcomes.items() if o == "waiting"}
                if any(o != "waiting" for o in outcomes.values()):
                    waiting.clear()
                continue
            if not self._await_retry(deadline):
                return changed
        return changed

    def _busy(self) -> list[str]:
        """Units that still have something to do (hooks to run or retry, transient status)."""
        return [
            name
            for name, unit in self.units.items()
            if not self.model.down(name)
            and (
                self._retrying(unit)
                or (unit.queue and unit.agent != "error")
                or (unit.life == "alive" and unit.status[0] in TRANSIENT)
            )
        ]

    def unsettled(self) -> list[str]:
        """The units still changing, each with why (for the bound's error)."""
        lines = []
        for name, unit in self.units.items():
            why = []
            if unit.queue:
                why.append(f"{len(unit.queue)} hook(s) queued, next {unit.queue[0]['name']}")
            if unit.status[0] in TRANSIENT:
                why.append(f"{unit.status[0]}: {unit.status[1]}")
            if name in self.changing:
                why.append("its last hooks changed the model")
            if why:
                lines.append(f"{name} ({'; '.join(why)})")
        return lines

    def stuck(self) -> list[str]:
        """Units in error whose failed hook used up its retries, each with the error."""
        return [
            f"{name}: {unit.error}"
            for name, unit in self.units.items()
            if unit.agent == "error" and not self._retrying(unit)
        ]

    def settle(self, timeout: float = DEFAULT_TIMEOUT, idle_period: float = 0.0) -> list[str]:
        """Run hooks until the model is idle (and has stayed idle for ``idle_period`` s).

        Idle: no unit has hooks to run or retry or a ``maintenance``/``waiting`` status.
        Until then (and through ``idle_period``), the ``update-status`` timers that fall due
        run their hooks; one that changes something starts ``idle_period`` again.

        Returns:
            The units left in error (their failed hook used up its retries), as :meth:`stuck`.

        Raises:
            NotSettledError: still changing after ``timeout`` seconds; names the units.
        """
        deadline = time.monotonic() + timeout
        self._since = time.monotonic()
        quiet_since: float | None = None  # since when nothing changed and nothing is busy
        while True:
            self.changing = set()
            changed = self._run_queued(deadline)
            now = time.monotonic()
            if changed or self._busy():
                quiet_since = None
            else:
                quiet_since = now if quiet_since is None else quiet_since
                if now - quiet_since >= idle_period:
                    return self.stuck()
            if now >= deadline:
                for unit in self.units.values():  # the timer's hooks that had no turn
                    unit.queue = [e for e in unit.queue if e["name"] != "update_status"]
                self.model.save()
                if quiet_since is not None:
                    return self.stuck()
                raise NotSettledError(
                    f"the model did not settle within {timeout:.0f} s "
                    f"({self.model.state.hooks_run} hooks run; hook order: {self.model.order}); "
                    "still changing: " + (", ".join(self.unsettled()) or "?")
                )
            wake = [deadline]
            timer = self._next_timer()
            if timer is not None:
                wake.append(now + timer - time.time())
            if quiet_since is not None:
                wake.append(quiet_since + idle_period)
            time.sleep(min(max(0.0, min(wake) - now), 10.0))

    # -- actions ---------------------------------------------------------------------------

    def run_action(self, name: str, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Run ``action`` on unit ``name`` now; ``{"results": …}`` or ``{"failed": message}``."""
        unit = self.model.unit(name)
        app = self.model.apps[unit.app]
        if self.model.down(name):
            raise ModelError(f"{name} is on machine {unit.machine}, which is down")
        if action not in app.actions:
            known = ", ".join(app.actions) or "none"
            raise ModelError(f"{app.charm} has no action {action!r} (actions: {known})")
        agent = unit.agent  # an action leaves the unit's hook state as it was
        event = make_event("action", action=action, params=dict(params))
        hook = self._start_hook(name, event)
        self.model.save()
        _, result = self._finish(hook, self._run(self.model.machine_of(name), hook.request))
        self.units[name].agent = agent
        self.model.save()
        if "action_failed" in result:
            return {"failed": result["action_failed"]}
        if "error" in result:
            return {"failed": f"the action's hook failed:\n{result['error']}"}
        return {"results": result.get("action_results") or {}}
