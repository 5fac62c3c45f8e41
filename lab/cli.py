"""The ``lab`` command: deploy and operate bundles on this host, with verbs that mirror Juju's.

    lab deploy BUNDLE [--overlay FILE]...   lab status [--format json]
    lab add-unit APP [-n N]                 lab remove-unit UNIT...
    lab config APP [key=value...]           lab relate A[:ep] B[:ep]
    lab remove-relation A[:ep] B[:ep]       lab run UNIT ACTION [key=value...]
    lab exec UNIT -- CMD...                 lab wait [--idle-period S]
    lab resolved UNIT                       lab destroy
    lab kill-machine N                      lab start-machine N
    lab refresh APP                         lab model-config [key=value...]

Every hook runs through the built charm's ``dispatch`` (``scripts/build-charms`` layout, built
when its sources changed) with the lab's hook tools, as a Juju unit agent runs it.

Commands that change the model run its hooks until it is idle before they return (as
``juju ... && juju wait-for``), unless ``--no-wait``; meanwhile they print a line on stderr
whenever a unit's status changes (seconds so far, hooks run in all, the unit, its workload
status and agent), unless ``--quiet``. The model lives under ``--root``
(default: ``$LAB_ROOT``, else ``.lab/model`` in the repository).
Exit codes: 0 done, 1 a unit in error / a failed action / not settled, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import yaml

from lab import applications
from lab import bundle as bundles
from lab.build import REPO
from lab.machines import Lab
from lab.model import Model, ModelError
from lab.runner import DEFAULT_TIMEOUT, NotSettledError, Runner
from lab.status import format_status, status

DEFAULT_ROOT = os.path.join(REPO, ".lab", "model")


class UsageError(Exception):
    """Bad input on the command line (exit code 2)."""


def _key_values(items: Sequence[str]) -> dict[str, str]:
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"expected key=value, got {item!r}")
        values[key] = value
    return values


# -- commands ----------------------------------------------------------------------------


def _settle(model: Model, args: argparse.Namespace) -> int:
    if getattr(args, "no_wait", False):
        return 0
    progress = None if args.quiet else lambda line: print(line, file=sys.stderr, flush=True)
    runner = Runner(model, progress)
    stuck = runner.settle(timeout=args.timeout, idle_period=getattr(args, "idle_period", 0.0))
    if stuck:
        print(
            f"units in error (their hook failed; fix the cause, then 'lab resolved UNIT'; "
            f"hook order: {model.order}):",
            *stuck,
            sep="\n  ",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """Validate the bundle (nothing starts when it is invalid), deploy it, wait."""
    if Model.exists(args.root):
        raise ModelError(f"a model already exists under {args.root}: 'lab destroy' it first")
    bundle = bundles.load_bundle(args.bundle, overlays=args.overlay)  # before anything starts
    print(bundles.describe(bundle))
    with Model.locked(args.root):
        model = Model.create(args.root, seed=args.seed)
        print(f"hook order: {model.order}")
        model.deploy(bundle)
        code = _settle(model, args)
        print(format_status(status(model)))
    return code


def cmd_refresh(args: argparse.Namespace) -> int:
    """Rebuild an application's charm and upgrade its units to it (``juju refresh``)."""
    model = Model(args.root)
    model.refresh(args.application)
    return _settle(model, args)


def cmd_status(args: argparse.Namespace) -> int:
    """Print the model's status."""
    found = status(Model(args.root))
    print(json.dumps(found, indent=2) if args.format == "json" else format_status(found))
    return 0


def cmd_add_unit(args: argparse.Namespace) -> int:
    """Add units to a principal application."""
    model = Model(args.root)
    if model.app(args.application).subordinate:
        raise ModelError(f"{args.application} is a subordinate: its units follow its principal")
    if args.num_units < 1:
        raise UsageError("-n must be at least 1")
    for _ in range(args.num_units):
        print("added", model.add_unit(args.application))
    model.save()
    return _settle(model, args)


def cmd_remove_unit(args: argparse.Namespace) -> int:
    """Remove units (their subordinates with them), then wait until they are gone."""
    model = Model(args.root)
    for unit in args.units:
        model.remove_unit(unit)
    return _settle(model, args)


def cmd_config(args: argparse.Namespace) -> int:
    """Show an application's config, or change it (validated like a bundle's options)."""
    model = Model(args.root)
    if not args.values:
        print(yaml.safe_dump(model.app(args.application).config, sort_keys=True), end="")
        return 0
    app = model.application(args.application)
    values = {k: applications.option_value(app, k, v) for k, v in _key_values(args.values).items()}
    model.set_config(args.application, values)
    return _settle(model, args)


def cmd_relate(args: argparse.Namespace) -> int:
    """Relate two applications (endpoints resolved as a bundle's ``relations`` are)."""
    model = Model(args.root)
    apps = {name: model.application(name) for name in model.apps}
    relation = applications.relation_between(apps, args.a, args.b)
    model.relate(relation)
    model.save()
    return _settle(model, args)


def cmd_remove_relation(args: argparse.Namespace) -> int:
    """Remove a relation: each side departs the other's units, then relation-broken."""
    model = Model(args.root)
    model.remove_relation(model.find_relation(args.a, args.b))
    return _settle(model, args)


def _params(model: Model, unit: str, action: str, items: Sequence[str]) -> dict[str, Any]:
    spec = model.apps[model.unit(unit).app].actions.get(action) or {}
    declared = spec.get("params") or {}
    params: dict[str, Any] = {}
    for key, text in _key_values(items).items():
        kind = (declared.get(key) or {}).get("type", "string")
        params[key] = text if kind == "string" else yaml.safe_load(text)
    return params


def cmd_run(args: argparse.Namespace) -> int:
    """Run an action on a unit; print its results; exit 1 when it fails."""
    model = Model(args.root)
    params = _params(model, args.unit, args.action, args.params)
    outcome = Runner(model).run_action(args.unit, args.action, params)
    if "failed" in outcome:
        print(f"Action {args.action} on {args.unit} failed: {outcome['failed']}", file=sys.stderr)
        _settle(model, args)
        return 1
    print(
        yaml.safe_dump(outcome["results"], sort_keys=True) if outcome["results"] else "ok",
        end="" if outcome["results"] else "\n",
    )
    return _settle(model, args)


def cmd_exec(args: argparse.Namespace) -> int:
    """Run a command inside a unit's machine, passing its output and exit code through."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("exec needs a command: lab exec UNIT -- CMD...")
    machine = Model(args.root).machine_of(args.unit)
    return machine.run(command).returncode


def cmd_kill_machine(args: argparse.Namespace) -> int:
    """Lose a machine as Juju does: every process killed, no more hooks run there."""
    Model(args.root).kill_machine(args.machine)
    return 0


def cmd_start_machine(args: argparse.Namespace) -> int:
    """Bring a lost machine back (its units run ``start``, as after a reboot), then wait."""
    model = Model(args.root)
    model.start_machine(args.machine)
    return _settle(model, args)


def cmd_wait(args: argparse.Namespace) -> int:
    """Run hooks (and the update-status timers that fall due) until the model is idle."""
    return _settle(Model(args.root), args)


def cmd_model_config(args: argparse.Namespace) -> int:
    """Show the model's config, or change it (update-status-hook-interval)."""
    model = Model(args.root)
    config = model.model_config(_key_values(args.values))
    if not args.values:
        print(yaml.safe_dump(config, sort_keys=True), end="")
    return 0


def cmd_resolved(args: argparse.Namespace) -> int:
    """Retry a unit's failed hook."""
    model = Model(args.root)
    model.resolved(args.unit)
    return _settle(model, args)


def cmd_destroy(args: argparse.Namespace) -> int:
    """Stop every process of the lab and remove its namespaces, mounts and state."""
    if not os.path.exists(os.path.join(args.root, "machines.json")):
        print(f"no lab under {args.root}")
        return 0
    left = Lab(args.root).destroy()
    if left:
        print("left behind:", *left, sep="\n  ", file=sys.stderr)
        return 1
    print(f"destroyed the lab under {args.root}")
    return 0


# -- parsing -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lab", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root",
        default=os.environ.get("LAB_ROOT", DEFAULT_ROOT),
        help="where the model lives (default: $LAB_ROOT or .lab/model)",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, func: Any, wait: bool = True, **kw: Any) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=func.__doc__.splitlines()[0], **kw)
        sub.set_defaults(func=func)
        if wait:
            sub.add_argument(
                "--timeout",
                type=float,
                default=DEFAULT_TIMEOUT,
                help="give up waiting after this many seconds",
            )
            sub.add_argument("--no-wait", action="store_true", help="queue the hooks only")
            sub.add_argument(
                "--quiet",
                action="store_true",
                help="no progress lines (else: one per unit status change, on stderr)",
            )
        return sub

    deploy = verb("deploy", cmd_deploy)
    deploy.add_argument("bundle")
    deploy.add_argument("--overlay", action="append", default=[], metavar="FILE")
    deploy.add_argument(
        "--seed",
        type=int,
        help="orders hooks that start together (default: LAB_SEED, else a random one)",
    )
    verb("status", cmd_status, wait=False).add_argument(
        "--format", choices=("tabular", "json"), default="tabular"
    )
    add = verb("add-unit", cmd_add_unit)
    add.add_argument("application")
    add.add_argument("-n", "--num-units", type=int, default=1)
    verb("remove-unit", cmd_remove_unit).add_argument("units", nargs="+")
    config = verb("config", cmd_config)
    config.add_argument("application")
    config.add_argument("values", nargs="*", metavar="key=value")
    relate = verb("relate", cmd_relate)
    relate.add_argument("a")
    relate.add_argument("b")
    unrelate = verb("remove-relation", cmd_remove_relation)
    unrelate.add_argument("a")
    unrelate.add_argument("b")
    run = verb("run", cmd_run)
    run.add_argument("unit")
    run.add_argument("action")
    run.add_argument("params", nargs="*", metavar="key=value")
    execute = verb("exec", cmd_exec, wait=False)
    execute.add_argument("unit")
    execute.add_argument("command", nargs=argparse.REMAINDER)
    verb("wait", cmd_wait).add_argument(
        "--idle-period",
        type=float,
        default=0.0,
        metavar="S",
        help="the model must stay idle this many seconds (update-status timers run meanwhile)",
    )
    verb("model-config", cmd_model_config, wait=False).add_argument(
        "values", nargs="*", metavar="key=value"
    )
    verb("resolved", cmd_resolved).add_argument("unit")
    verb("destroy", cmd_destroy, wait=False)
    verb("kill-machine", cmd_kill_machine, wait=False).add_argument("machine")
    verb("start-machine", cmd_start_machine).add_argument("machine")
    verb("refresh", cmd_refresh).add_argument("application")
    return parser


@contextmanager
def _errors() -> Iterator[list[int]]:
    code = [0]
    try:
        yield code
    except (applications.BundleError, UsageError) as exc:
        print(f"ERROR {exc}", file=sys.stderr)
        code[0] = 2
    except NotSettledError as exc:
        print(f"ERROR {exc}", file=sys.stderr)
        code[0] = 1
    except (ModelError, FileNotFoundError) as exc:
        print(f"ERROR {exc}", file=sys.stderr)
        code[0] = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``lab`` command; its exit code."""
    args = _parser().parse_args(argv)
    args.root = os.path.abspath(args.root)
    with _errors() as code:
        if args.func in (cmd_status, cmd_exec, cmd_destroy, cmd_deploy):
            code[0] = args.func(args)
        else:
            if not Model.exists(args.root):
                raise ModelError(f"no model under {args.root}: 'lab deploy BUNDLE' first")
            with Model.locked(args.root):
                code[0] = args.func(args)
    sys.stdout.flush()
    return code[0]


if __name__ == "__main__":
    sys.exit(main())
