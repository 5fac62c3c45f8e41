"""The rolling upgrade: the plan (upgrade.py), one member's steps, and the charm driving it."""

import json
from unittest.mock import MagicMock

import pytest
from ops import testing

from charm import LXDCharm
from conftest import BOOTSTRAPPED, member, member_peer, peer, server_info
from installer import InstallError
from lxd import LXDAPIError, LXDUnavailableError
from upgrade import (
    ClusterNotReadyError,
    MemberUpgrade,
    Rollout,
    UpgradeFailure,
    UpgradePlan,
    UpgradeRefusedError,
    UpgradeStepError,
    mentions,
    next_plan,
    upgrade_order,
)

# The leader is lxd/0: it upgrades last.
PLAN = UpgradePlan(id="1", channel="5.21/stable", order=("lxd/1", "lxd/2", "lxd/0"))
THREE = frozenset({"lxd/0", "lxd/1", "lxd/2"})
RECORD = json.dumps({"lxd-0": "lxd/0", "lxd-1": "lxd/1", "lxd-2": "lxd/2"})


def rollout(
    done: dict[str, str] | None = None,
    failures: dict[str, UpgradeFailure] | None = None,
    plan: UpgradePlan = PLAN,
    present: frozenset[str] = THREE,
) -> Rollout:
    return Rollout(plan, done or {}, failures or {}, present)


def failed(step: str = "refresh", attempt: int = 1, reason: str = "snap: no such channel"):
    return UpgradeFailure(id="1", attempt=attempt, reason=reason, step=step)


# -- the plan --------------------------------------------------------------------------


def test_order_is_by_unit_number_with_the_leader_last():
    assert upgrade_order({"lxd/10", "lxd/2", "lxd/0", "lxd/3"}, "lxd/2") == (
        "lxd/0",
        "lxd/3",
        "lxd/10",
        "lxd/2",
    )
    # a leader that is no member is not in it
    assert upgrade_order({"lxd/1"}, "lxd/0") == ("lxd/1",)


def test_plan_and_failure_round_trip_through_peer_data():
    assert UpgradePlan.from_json(PLAN.to_json()) == PLAN
    assert json.loads(PLAN.to_json()) == {
        "id": "1",
        "channel": "5.21/stable",
        "order": ["lxd/1", "lxd/2", "lxd/0"],
        "attempt": 1,
    }
    assert UpgradeFailure.from_json(failed().to_json()) == failed()


def test_turns_follow_the_order():
    # GIVEN nothing done: only the first unit's turn
    fresh = rollout()
    assert [u for u in THREE if fresh.turn_of(u)] == ["lxd/1"]
    assert (fresh.progress, fresh.current, fresh.complete) == ("0/3", "lxd/1", False)
    # GIVEN lxd/1 done: lxd/2's turn
    assert rollout(done={"lxd/1": "1"}).turn_of("lxd/2")
    # a unit that did an older upgrade has not done this one
    assert rollout(done={"lxd/1": "0"}).turn_of("lxd/1")
    # a unit no longer present is skipped
    assert rollout(present=frozenset({"lxd/0", "lxd/2"})).turn_of("lxd/2")
    # a unit outside the plan (added later) never has a turn
    assert not rollout(done={"lxd/1": "1", "lxd/2": "1", "lxd/0": "1"}).turn_of("lxd/3")


def test_a_failure_of_this_attempt_stops_everyone():
    stopped = rollout(done={"lxd/1": "1"}, failures={"lxd/2": failed()})
    assert stopped.failure == ("lxd/2", failed())
    assert not any(stopped.turn_of(u) for u in THREE)
    # a failure of an earlier attempt does not count
    resumed = rollout(
        done={"lxd/1": "1"},
        failures={"lxd/2": failed()},
        plan=UpgradePlan(**{**vars(PLAN), "attempt": 2}),
    )
    assert resumed.failure is None
    assert resumed.turn_of("lxd/2")


def test_complete_when_every_present_unit_is_done():
    assert rollout(done={"lxd/1": "1", "lxd/2": "1", "lxd/0": "1"}).complete
    assert rollout(
        done={"lxd/1": "1", "lxd/0": "1"}, present=frozenset({"lxd/0", "lxd/1"})
    ).complete


def test_a_new_plan_when_nothing_runs():
    plan, resumed_at = next_plan(None, "5.21/stable", {"lxd/0", "lxd/1", "lxd/2"}, "lxd/0")
    assert (plan, resumed_at) == (PLAN, "")
    complete = rollout(done={"lxd/1": "1", "lxd/2": "1", "lxd/0": "1"})
    again, _ = next_plan(complete, "5.21/stable", THREE, "lxd/0")
    assert (again.id, again.attempt) == ("2", 1)


def test_a_running_rollout_is_never_replaced():
    running = rollout(done={"lxd/1": "1"})
    for channel in ("5.21/stable", "latest/stable"):
        with pytest.raises(UpgradeRefusedError) as refused:
            next_plan(running, channel, THREE, "lxd/0")
        assert str(refused.value) == (
            "an upgrade to 5.21/stable is in progress (1/3 done, now lxd/2)"
        )


def test_a_stopped_rollout_resumes_with_the_same_channel():
    stopped = rollout(done={"lxd/1": "1"}, failures={"lxd/2": failed()})
    plan, resumed_at = next_plan(stopped, "5.21/stable", THREE, "lxd/0")
    assert (plan.id, plan.attempt, plan.order, resumed_at) == ("1", 2, PLAN.order, "lxd/2")


def test_a_stopped_rollout_gives_way_to_another_channel():
    # GIVEN lxd/2 stopped the rollout (its member may still be evacuated)
    stopped = rollout(done={"lxd/1": "1"}, failures={"lxd/2": failed()})
    plan, resumed_at = next_plan(stopped, "latest/stable", THREE, "lxd/0")
    # THEN a new rollout that starts with lxd/2, so no second member is taken out first
    assert plan == UpgradePlan("2", "latest/stable", ("lxd/2", "lxd/1", "lxd/0"))
    assert resumed_at == ""


@pytest.mark.parametrize(
    ("problem", "named"),
    [
        ("member lxd-1 is Evacuated", True),
        ("lxd-1: no heartbeat for 30s", True),
        ("member lxd-10 is Offline", False),
        ("member lxd-1-b is Offline", False),
        ("storage pool remote is Errored", False),
    ],
)
def test_problems_name_members_exactly(problem, named):
    assert mentions(problem, "lxd-1") is named


# -- one member's steps ----------------------------------------------------------------


class Clock:
    """A fake monotonic clock that sleeping advances."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def steps() -> list[str]:
    return []


@pytest.fixture
def workload(steps: list[str]) -> tuple[MagicMock, MagicMock]:
    """An LXD and an installer that log each step, on a healthy 3-member cluster."""
    lxd = MagicMock()
    lxd.cluster_health.return_value = []
    lxd.members.return_value = [member("lxd-0"), member("lxd-1"), member("lxd-2")]
    lxd.evacuate.side_effect = lambda *a, **k: steps.append("evacuate")
    lxd.restore.side_effect = lambda *a, **k: steps.append("restore")
    lxd.cluster_health.side_effect = lambda: steps.append("health") or []
    installer = MagicMock()
    installer.refresh.side_effect = lambda *a: steps.append("refresh") or True
    return lxd, installer


def upgrader(workload, clustered=True, clock=None, progress=None) -> MemberUpgrade:
    lxd, installer = workload
    clock = clock or Clock()
    return MemberUpgrade(
        lxd,
        installer,
        "lxd-1",
        clustered=clustered,
        progress=progress or (lambda step: None),
        timeout=300,
        interval=5,
        sleep=clock.sleep,
        clock=clock,
    )


def test_member_steps_run_in_order(workload, steps):
    shown = []
    upgrader(workload, progress=shown.append).run(PLAN, "cohort-1")
    lxd, installer = workload
    # the health gate, then evacuate → refresh → health → restore
    assert steps == ["health", "evacuate", "refresh", "health", "restore"]
    assert shown == ["evacuate", "refresh", "healthcheck", "restore"]
    lxd.evacuate.assert_called_once_with("lxd-1")
    installer.refresh.assert_called_once_with("5.21/stable", "cohort-1")
    lxd.restore.assert_called_once_with("lxd-1")


def test_problems_elsewhere_take_no_member_out(workload, steps):
    lxd, installer = workload
    lxd.cluster_health.side_effect = None
    lxd.cluster_health.return_value = ["member lxd-2 is Offline", "member lxd-1 is Evacuated"]
    with pytest.raises(ClusterNotReadyError) as waiting:
        upgrader(workload).run(PLAN, "")
    assert waiting.value.problems == ("member lxd-2 is Offline",)
    lxd.evacuate.assert_not_called()
    installer.refresh.assert_not_called()


def test_another_evacuated_member_takes_no_second_one_out(workload):
    lxd, _ = workload
    lxd.members.return_value = [member("lxd-0", "Evacuated"), member("lxd-1")]
    with pytest.raises(ClusterNotReadyError, match="member lxd-0 is evacuated"):
        upgrader(workload).run(PLAN, "")
    lxd.evacuate.assert_not_called()


def test_waits_until_the_member_answers_and_the_cluster_is_healthy(workload, steps):
    lxd, _ = workload
    answers = iter([LXDUnavailableError("no socket"), server_info(True), server_info(True)])

    def server_info_after_restart(refresh=False):
        assert refresh  # read again, not what this hook read before the refresh
        value = next(answers)
        if isinstance(value, Exception):
            raise value
        return value

    health = iter([[], ["member lxd-2 is Offline"], []])
    lxd.server_info.side_effect = server_info_after_restart
    lxd.cluster_health.side_effect = lambda: next(health)
    clock = Clock()
    upgrader(workload, clock=clock).run(PLAN, "")
    assert clock.sleeps == [5, 5]
    lxd.restore.assert_called_once_with("lxd-1")


def test_a_member_not_back_in_time_fails_the_healthcheck_and_stays_evacuated(workload):
    lxd, _ = workload
    lxd.members.return_value = [member("lxd-0"), member("lxd-1", "Offline"), member("lxd-2")]
    clock = Clock()
    with pytest.raises(UpgradeStepError) as failure:
        upgrader(workload, clock=clock).run(PLAN, "")
    assert failure.value.step == "healthcheck"
    assert failure.value.reason == "not healthy 300 s after the refresh: member lxd-1 is Offline"
    assert sum(clock.sleeps) == 300
    lxd.restore.assert_not_called()


def test_a_member_missing_from_the_cluster_is_not_healthy(workload):
    lxd, _ = workload
    lxd.members.return_value = [member("lxd-0")]
    with pytest.raises(UpgradeStepError, match="lxd-1 is not listed as a cluster member"):
        upgrader(workload).run(PLAN, "")


def test_restore_is_retried_while_lxd_is_not_ready_to_take_instances_back(workload):
    lxd, _ = workload
    lxd.restore.side_effect = [
        LXDAPIError("POST", "Migration API failure: Target node is offline"),
        LXDAPIError("POST", "Missing event connection with target cluster member"),
        None,
    ]
    # c1 ran before; the failed attempts stopped it (LXD stops before it moves)
    lxd.instance_locations.side_effect = [
        {"default/c1": ("lxd-0", "Running"), "default/c2": ("lxd-0", "Stopped")},
        {"default/c1": ("lxd-1", "Stopped"), "default/c2": ("lxd-1", "Stopped")},
    ]
    clock = Clock()
    upgrader(workload, clock=clock).run(PLAN, "")
    assert lxd.restore.call_count == 3
    assert clock.sleeps == [5, 5]
    lxd.start_instance.assert_called_once_with("default/c1")  # c2 was stopped: it stays


def test_restore_gives_up_after_its_bound_with_lxds_reason(workload):
    lxd, _ = workload
    lxd.restore.side_effect = LXDAPIError("POST", "Target node is offline")
    clock = Clock()
    with pytest.raises(UpgradeStepError, match="Target node is offline") as failure:
        upgrader(workload, clock=clock).run(PLAN, "")
    assert failure.value.step == "restore"
    assert sum(clock.sleeps) == 120


def test_a_failed_refresh_is_never_restored(workload, steps):
    lxd, installer = workload
    installer.refresh.side_effect = InstallError("snap refresh lxd failed: no such channel")
    with pytest.raises(UpgradeStepError) as failure:
        upgrader(workload).run(PLAN, "")
    assert (failure.value.step, failure.value.reason) == (
        "refresh",
        "snap refresh lxd failed: no such channel",
    )
    assert steps == ["health", "evacuate"]
    lxd.restore.assert_not_called()


def test_a_standalone_server_refreshes_and_waits_only(workload, steps):
    lxd, _ = workload
    upgrader(workload, clustered=False).run(UpgradePlan("1", "", ("lxd/0",)), "")
    assert steps == ["refresh"]
    lxd.evacuate.assert_not_called()
    lxd.server_info.assert_called_once_with(refresh=True)


# -- the charm: the action -------------------------------------------------------------


def cluster(lxd: MagicMock, *names: str) -> None:
    lxd.server_info.return_value = server_info(True)
    lxd.members.return_value = [member(n) for n in names or ("lxd-0", "lxd-1", "lxd-2")]
    lxd.cluster_health.return_value = []


def leader_state(
    app: dict[str, str] | None = None, peers: dict[int, dict[str, str]] | None = None
):
    relation = peer(
        app={**BOOTSTRAPPED, "members": RECORD, **(app or {})},
        local=member_peer(0),
        peers=peers if peers is not None else {1: member_peer(1), 2: member_peer(2)},
    )
    return relation, testing.State(leader=True, relations=[relation])


def run_upgrade(ctx, state, **params):
    return ctx.run(ctx.on.action("upgrade", params=params), state)


def test_the_leader_plans_the_rollout_and_returns_at_once(ctx, lxd, installer):
    # GIVEN a snap install and a 3-member cluster led by lxd/0
    installer.uses_cohort = True
    cluster(lxd)
    relation, state = leader_state()
    # WHEN the operator runs upgrade
    out = run_upgrade(ctx, state)
    # THEN the plan is recorded (channel from config, leader last), nothing is refreshed here
    assert json.loads(out.get_relation(relation.id).local_app_data["upgrade"]) == {
        "id": "1",
        "channel": "5.21/stable",
        "order": ["lxd/1", "lxd/2", "lxd/0"],
        "attempt": 1,
    }
    assert ctx.action_results == {
        "upgrade-id": "1",
        "order": "lxd/1 lxd/2 lxd/0",
        "channel": "5.21/stable",
    }
    installer.refresh.assert_not_called()
    lxd.evacuate.assert_not_called()
    assert out.app_status == testing.MaintenanceStatus("upgrading 0/3 (lxd/1)")


def test_the_channel_parameter_wins_over_the_option(ctx, lxd, installer):
    installer.uses_cohort = True
    cluster(lxd)
    relation, state = leader_state()
    out = run_upgrade(ctx, state, channel="latest/stable")
    assert json.loads(out.get_relation(relation.id).local_app_data["upgrade"])["channel"] == (
        "latest/stable"
    )


def test_the_distro_package_has_no_channels(ctx, lxd):
    cluster(lxd)
    relation, state = leader_state()
    run_upgrade(ctx, state, channel="latest/stable")
    assert ctx.action_results["channel"] == "none"
    assert ctx.action_results["note"].startswith(
        "LXD comes from the distro package here: channels do not apply"
    )


def test_a_bad_channel_fails_naming_it(ctx, lxd):
    cluster(lxd)
    relation, state = leader_state()
    with pytest.raises(testing.ActionFailed) as failure:
        run_upgrade(ctx, state, channel="six")
    assert failure.value.message == (
        "invalid 'channel': expected TRACK[/RISK[/BRANCH]], e.g. 5.21/stable"
    )
    assert "upgrade" not in failure.value.state.get_relation(relation.id).local_app_data


def test_a_non_leader_refuses(ctx_unit1, lxd):
    cluster(lxd)
    relation = peer(app={**BOOTSTRAPPED, "members": RECORD}, peers={0: member_peer(0)})
    with pytest.raises(testing.ActionFailed) as failure:
        run_upgrade(ctx_unit1, testing.State(relations=[relation]))
    assert failure.value.message == "run it on the leader: juju run lxd/leader upgrade"


def test_nothing_to_upgrade_before_the_cluster_exists(ctx, lxd):
    with pytest.raises(testing.ActionFailed) as failure:
        run_upgrade(ctx, testing.State(leader=True, relations=[peer()]))
    assert failure.value.message == "nothing to upgrade yet: no unit has joined the cluster"


def test_invalid_config_fails_the_action(ctx, lxd):
    cluster(lxd)
    relation, state = leader_state()
    with pytest.raises(testing.ActionFailed) as failure:
        run_upgrade(ctx, testing.State(leader=True, relations=[relation], config={"channel": "x"}))
    assert failure.value.message.startswith("config: invalid 'channel'")


def test_a_rollout_in_progress_is_not_replaced(ctx, lxd, installer):
    installer.uses_cohort = True
    cluster(lxd)
    relation, state = leader_state(
        app={"upgrade": PLAN.to_json()},
        peers={1: {**member_peer(1), "upgrade-done": "1"}, 2: member_peer(2)},
    )
    with pytest.raises(testing.ActionFailed) as failure:
        run_upgrade(ctx, state, channel="latest/stable")
    assert failure.value.message == (
        "an upgrade to 5.21/stable is in progress (1/3 done, now lxd/2); "
        "wait for it, or for it to stop and run upgrade again"
    )


def test_running_upgrade_again_resumes_a_stopped_rollout(ctx, lxd, installer):
    # GIVEN lxd/1 done and lxd/2 failed at its refresh
    installer.uses_cohort = True
    cluster(lxd)
    relation, state = leader_state(
        app={"upgrade": PLAN.to_json()},
        peers={
            1: {**member_peer(1), "upgrade-done": "1"},
            2: {**member_peer(2), "upgrade-failed": failed().to_json()},
        },
    )
    # WHEN the operator fixed it and runs upgrade again (same channel)
    out = run_upgrade(ctx, state)
    # THEN the same rollout, next attempt, resumed at lxd/2
    plan = UpgradePlan.from_json(out.get_relation(relation.id).local_app_data["upgrade"])
    assert (plan.id, plan.attempt, plan.order) == ("1", 2, PLAN.order)
    assert ctx.action_results == {
        "upgrade-id": "1",
        "order": "lxd/1 lxd/2 lxd/0",
        "channel": "5.21/stable",
        "resumed-at": "lxd/2",
        "attempt": 2,
    }
    assert out.app_status == testing.MaintenanceStatus("upgrading 1/3 (lxd/2)")


# -- the charm: each unit's turn ---------------------------------------------------------


@pytest.fixture
def ctx_unit2(lxd: MagicMock, installer: MagicMock, tuning: MagicMock) -> testing.Context:
    return testing.Context(LXDCharm, unit_id=2)


def unit_state(n: int, plan: UpgradePlan = PLAN, local=None, app=None, **others: dict[str, str]):
    """Unit lxd/<n>'s view: the plan, its own data, and the other units' (``u0=...``)."""
    peers = {i: member_peer(i) for i in (0, 1, 2) if i != n}
    for key, extra in others.items():
        peers[int(key[1:])] = {**peers[int(key[1:])], **extra}
    relation = peer(
        app={**BOOTSTRAPPED, "members": RECORD, "upgrade": plan.to_json(), **(app or {})},
        local={**member_peer(n), **(local or {})},
        peers=peers,
    )
    return relation, testing.State(relations=[relation])


def logged_steps(lxd: MagicMock, installer: MagicMock) -> list[str]:
    steps: list[str] = []
    lxd.evacuate.side_effect = lambda *a, **k: steps.append("evacuate")
    lxd.restore.side_effect = lambda *a, **k: steps.append("restore")
    installer.refresh.side_effect = lambda *a: steps.append("refresh") or True
    lxd.cluster_health.side_effect = lambda: steps.append("health") or []
    return steps


def test_a_unit_waits_for_the_units_before_it(ctx_unit2, lxd, installer):
    cluster(lxd)
    relation, state = unit_state(2)
    out = ctx_unit2.run(ctx_unit2.on.relation_changed(relation, remote_unit=0), state)
    lxd.evacuate.assert_not_called()
    installer.refresh.assert_not_called()
    assert "upgrade-done" not in out.get_relation(relation.id).local_unit_data
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-2 (3 members)")


def test_its_turn_runs_every_step_and_wakes_the_next_unit(ctx_unit2, lxd, installer):
    # GIVEN lxd/1 is done: lxd/2's turn
    installer.uses_cohort = True
    cluster(lxd)
    steps = logged_steps(lxd, installer)
    relation, state = unit_state(2, app={"snap-cohort": "c1"}, u1={"upgrade-done": "1"})
    # WHEN it hears from lxd/1
    out = ctx_unit2.run(ctx_unit2.on.relation_changed(relation, remote_unit=1), state)
    # THEN evacuate → refresh → healthy → restore, in that order, and it records it is done
    assert steps == ["health", "evacuate", "refresh", "health", "restore"]
    lxd.evacuate.assert_called_once_with("lxd-2")
    installer.refresh.assert_called_once_with("5.21/stable", "c1")
    lxd.restore.assert_called_once_with("lxd-2")
    assert out.get_relation(relation.id).local_unit_data["upgrade-done"] == "1"
    assert [s.message for s in ctx_unit2.unit_status_history if s.name == "maintenance"] == [
        "upgrading: evacuate",
        "upgrading: refresh",
        "upgrading: healthcheck",
        "upgrading: restore",
    ]
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-2 (3 members)")


def test_a_failed_refresh_stops_the_rollout_with_the_member_evacuated(ctx_unit2, lxd, installer):
    cluster(lxd)
    installer.refresh.side_effect = InstallError("snap refresh lxd failed: no such channel")
    relation, state = unit_state(2, u1={"upgrade-done": "1"})
    out = ctx_unit2.run(ctx_unit2.on.relation_changed(relation, remote_unit=1), state)
    local = out.get_relation(relation.id).local_unit_data
    assert json.loads(local["upgrade-failed"]) == {
        "id": "1",
        "attempt": 1,
        "reason": "snap refresh lxd failed: no such channel",
        "step": "refresh",
    }
    assert "upgrade-done" not in local
    lxd.evacuate.assert_called_once_with("lxd-2")
    lxd.restore.assert_not_called()
    assert out.unit_status == testing.BlockedStatus(
        "upgrade failed at refresh: snap refresh lxd failed: no such channel; fix it and run "
        "upgrade again (the member stays evacuated)"
    )


def test_the_failed_step_stays_the_status_while_the_daemon_is_down(ctx_unit2, lxd, installer):
    # GIVEN the refresh left LXD unable to start: every later hook fails to start it
    cluster(lxd)
    installer.ensure_running.side_effect = InstallError("/usr/bin/lxd exited while starting")
    failure = json.dumps(
        {"id": "1", "attempt": 1, "reason": "lxd exited while starting", "step": "refresh"}
    )
    _, state = unit_state(2, local={"upgrade-failed": failure}, u1={"upgrade-done": "1"})
    out = ctx_unit2.run(ctx_unit2.on.update_status(), state)
    # THEN the unit still says which upgrade step failed and how to resume
    assert out.unit_status == testing.BlockedStatus(
        "upgrade failed at refresh: lxd exited while starting; fix it and run upgrade again "
        "(the member stays evacuated)"
    )


def test_a_refused_evacuation_stops_the_rollout_with_nothing_changed(ctx_unit1, lxd, installer):
    from lxd import EvacuationRefusedError

    cluster(lxd)
    lxd.evacuate.side_effect = EvacuationRefusedError("no other member can take c1")
    relation, state = unit_state(1)
    out = ctx_unit1.run(ctx_unit1.on.relation_changed(relation, remote_unit=0), state)
    installer.refresh.assert_not_called()
    assert out.unit_status == testing.BlockedStatus(
        "upgrade failed at evacuate: no other member can take c1; fix it and run upgrade again"
    )


def test_after_a_failure_no_other_unit_proceeds(ctx, lxd, installer):
    # GIVEN lxd/2 failed; the leader (last) hears about it
    cluster(lxd)
    relation, state = unit_state(
        0, u1={"upgrade-done": "1"}, u2={"upgrade-failed": failed().to_json()}
    )
    state = testing.State(leader=True, relations=[relation])
    out = ctx.run(ctx.on.relation_changed(relation, remote_unit=2), state)
    lxd.evacuate.assert_not_called()
    installer.refresh.assert_not_called()
    assert out.app_status == testing.BlockedStatus(
        "upgrade stopped at lxd/2 (1/3 done): snap: no such channel"
    )
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-0 (3 members)")


def test_the_resumed_unit_retries_and_completes(ctx_unit2, lxd, installer):
    # GIVEN attempt 2 after lxd/2's refresh failed in attempt 1 (its member is evacuated)
    cluster(lxd, "lxd-0", "lxd-1")
    lxd.members.return_value = [member("lxd-0"), member("lxd-1"), member("lxd-2", "Evacuated")]
    lxd.cluster_health.return_value = ["member lxd-2 is Evacuated"]
    steps = logged_steps(lxd, installer)
    lxd.cluster_health.side_effect = lambda: (
        steps.append("health") or ["member lxd-2 is Evacuated"]
    )
    # restored, LXD lists the member ONLINE again
    lxd.restore.side_effect = lambda *a, **k: (
        steps.append("restore")
        or setattr(lxd.members, "return_value", [member(f"lxd-{n}") for n in range(3)])
    )
    relation, state = unit_state(
        2,
        plan=UpgradePlan(**{**vars(PLAN), "attempt": 2}),
        local={"upgrade-failed": failed().to_json()},
        u1={"upgrade-done": "1"},
    )
    out = ctx_unit2.run(ctx_unit2.on.relation_changed(relation), state)
    # THEN the steps run again (its own evacuation is no problem) and it is done
    assert steps == ["health", "evacuate", "refresh", "health", "restore"]
    local = out.get_relation(relation.id).local_unit_data
    assert local["upgrade-done"] == "1"
    assert "upgrade-failed" not in local
    assert out.unit_status == testing.ActiveStatus("cluster member lxd-2 (3 members)")


def test_problems_elsewhere_make_the_unit_wait_and_evacuate_nothing(ctx_unit1, lxd, installer):
    cluster(lxd)
    lxd.cluster_health.return_value = ["member lxd-0 is Offline"]
    relation, state = unit_state(1)
    out = ctx_unit1.run(ctx_unit1.on.update_status(), state)
    lxd.evacuate.assert_not_called()
    installer.refresh.assert_not_called()
    assert "upgrade-done" not in out.get_relation(relation.id).local_unit_data
    assert out.unit_status == testing.WaitingStatus(
        "upgrade waits for a healthy cluster: member lxd-0 is Offline"
    )


def test_a_departing_unit_does_not_upgrade(ctx_unit1, lxd, installer):
    cluster(lxd)
    relation, state = unit_state(1, local={"departing": "true"})
    ctx_unit1.run(ctx_unit1.on.update_status(), state)
    lxd.evacuate.assert_not_called()


def test_the_leader_upgrades_last_and_completes_the_rollout(ctx, lxd, installer):
    cluster(lxd)
    relation, state = unit_state(0, u1={"upgrade-done": "1"}, u2={"upgrade-done": "1"})
    state = testing.State(leader=True, relations=[relation])
    out = ctx.run(ctx.on.relation_changed(relation, remote_unit=2), state)
    lxd.evacuate.assert_called_once_with("lxd-0")
    assert out.get_relation(relation.id).local_unit_data["upgrade-done"] == "1"
    # the plan stays recorded, the application says how many members again
    assert "upgrade" in out.get_relation(relation.id).local_app_data
    assert out.app_status == testing.ActiveStatus("3 members")


def test_the_leader_shows_the_progress(ctx, lxd):
    cluster(lxd)
    relation, state = unit_state(0, u1={"upgrade-done": "1"})
    state = testing.State(leader=True, relations=[relation])
    out = ctx.run(ctx.on.update_status(), state)
    lxd.evacuate.assert_not_called()
    assert out.app_status == testing.MaintenanceStatus("upgrading 1/3 (lxd/2)")


def test_a_unit_added_after_an_upgrade_installs_its_channel(ctx_unit1, installer):
    installer.uses_cohort = True
    installer.installed_version.return_value = None
    plan = UpgradePlan("2", "latest/stable", ("lxd/0",))
    relation = peer(app={"snap-cohort": "k", "upgrade": plan.to_json()})
    ctx_unit1.run(ctx_unit1.on.install(), testing.State(relations=[relation]))
    installer.install.assert_called_once_with("latest/stable", "k")


def test_standalone_servers_upgrade_one_by_one_without_evacuation(ctx, ctx_unit1, lxd, installer):
    # GIVEN standalone servers: the plan covers every unit
    relation = peer(app={"mode": "standalone"}, peers={1: {}, 2: {}})
    out = run_upgrade(ctx, testing.State(leader=True, relations=[relation]))
    plan = UpgradePlan.from_json(out.get_relation(relation.id).local_app_data["upgrade"])
    assert plan.order == ("lxd/1", "lxd/2", "lxd/0")
    # WHEN the first one's turn comes
    relation = peer(app={"mode": "standalone", "upgrade": plan.to_json()}, peers={0: {}, 2: {}})
    out = ctx_unit1.run(
        ctx_unit1.on.relation_changed(relation),
        testing.State(relations=[relation], config={"mode": "standalone"}),
    )
    # THEN it refreshes and waits for its daemon; nothing is evacuated
    installer.refresh.assert_called_once_with("", "")
    lxd.evacuate.assert_not_called()
    lxd.restore.assert_not_called()
    assert out.get_relation(relation.id).local_unit_data["upgrade-done"] == "1"
