"""Juju's hook tools, as the lab's units call them: one program, named by its symlink.

A Juju unit agent puts ``relation-get``, ``secret-add``, ``status-set``… on the ``PATH`` of
every hook; ops' model backend calls them as subprocesses with Juju's arguments and reads
Juju's output formats. In the lab, :mod:`lab.dispatch` writes the hook's *context* — what the
controller would answer for this unit during this hook — to a file in :mod:`marshal`'s
format (its path in ``LAB_HOOK_CONTEXT``; :func:`load_context`, :func:`save_context`),
links every tool name below to this file in the unit's tools directory, and reads the
context back when the hook has ended: the tools record what the charm changed in it
(databags, secrets, status, ports, action results, logs).

Juju's rules hold: only the leader writes its application's databag, reads it in a
non-peer relation, manages application-owned secrets or sets the application status; a
unit sees the secrets it owns or was granted, and tracks a revision of each until it
refreshes. A flag this lab does not implement fails the tool with its name (argparse's
``unrecognized arguments``); a tool it does not implement is not on the ``PATH``.

The tools are links to ``lab/hooktool``, a small launcher that runs :func:`main` here with
``python3 -I -S`` (no site-packages, and this module's byte-code cached: ops may call
dozens of tools per hook), so this module imports only the standard library, and of it
only what loads fast: the context is marshalled, not JSON (``json`` imports ``re``,
``enum``, ``collections``…: 40 % of a tool's run), and the JSON the tools print is
written by :func:`dumps` with ``_json``'s string encoder.
"""

from __future__ import annotations

import fcntl
import marshal
import os
import sys
import time
from _json import encode_basestring_ascii

TYPE_CHECKING = False
if TYPE_CHECKING:  # the tools start fast: no typing import at run time
    from typing import Any, TypeAlias

    Context: TypeAlias = dict[str, Any]

CONTEXT_ENV = "LAB_HOOK_CONTEXT"


class ToolError(Exception):
    """The tool fails: Juju prints ``ERROR <message>`` and exits 1."""


class _Args:
    """Parsed arguments, as attributes (dashes become underscores)."""


class _Parser:
    """The subset of :mod:`argparse` the tools use (argparse itself costs each tool ~13 ms).

    Options: ``-r X``, ``--relation X``, ``--relation=X``, ``store_true`` flags; positionals
    with ``nargs`` None, ``?``, ``*`` or ``+``; ``--`` ends the options. An unknown option
    fails naming it, as Juju's tools do.
    """

    def __init__(self, prog: str, **_: Any):
        self.prog = prog
        self.options: dict[str, dict[str, Any]] = {}
        self.positionals: list[dict[str, Any]] = []

    def add_argument(self, *names: str, **spec: Any) -> None:
        dest = names[-1].lstrip("-").replace("-", "_")
        spec = {"dest": dest, **spec}
        if names[0].startswith("-"):
            for name in names:
                self.options[name] = spec
        else:
            self.positionals.append(spec)

    def _value(self, spec: dict[str, Any], text: str, name: str) -> Any:
        if spec.get("choices") and text not in spec["choices"]:
            raise ToolError(f"{self.prog}: invalid value {text!r} for {name}")
        try:
            return spec.get("type", str)(text)
        except ValueError:
            raise ToolError(f"{self.prog}: invalid value {text!r} for {name}") from None

    def parse_args(self, argv: list[str]) -> Any:
        args = _Args()
        for spec in [*self.options.values(), *self.positionals]:
            default = False if spec.get("action") == "store_true" else spec.get("default")
            setattr(args, spec["dest"], [] if spec.get("nargs") in ("*", "+") else default)
        words: list[str] = []
        items = iter(argv)
        for word in items:
            if word == "--":
                words.extend(items)
                break
            if not word.startswith("-") or word == "-":
                words.append(word)
                continue
            name, eq, inline = word.partition("=")
            option = self.options.get(name)
            if option is None:
                raise ToolError(f"{self.prog}: unrecognized arguments: {word}")
            if option.get("action") == "store_true":
                setattr(args, option["dest"], True)
                continue
            text = inline if eq else next(items, None)
            if text is None:
                raise ToolError(f"{self.prog}: argument {name}: expected one argument")
            setattr(args, option["dest"], self._value(option, text, name))
        for spec in [s for s in self.options.values() if s.get("required")]:
            if getattr(args, spec["dest"]) is None:
                raise ToolError(f"{self.prog}: the option --{spec['dest']} is required")
        self._positionals(args, words)
        return args

    def _positionals(self, args: _Args, words: list[str]) -> None:
        for index, spec in enumerate(self.positionals):
            nargs = spec.get("nargs")
            if nargs in ("*", "+"):
                later = len(self.positionals) - index - 1
                taken, words = words[: len(words) - later], words[len(words) - later :]
                if nargs == "+" and not taken:
                    raise ToolError(f"{self.prog}: missing argument {spec['dest']}")
                setattr(args, spec["dest"], taken)
            elif words:
                setattr(args, spec["dest"], words.pop(0))
            elif nargs != "?":
                raise ToolError(f"{self.prog}: missing argument {spec['dest']}")
        if words:
            raise ToolError(f"{self.prog}: unrecognized arguments: {' '.join(words)}")


def _parser(prog: str) -> _Parser:
    parser = _Parser(prog=prog, add_help=False, allow_abbrev=False)
    parser.add_argument("--format", choices=["json", "yaml", "smart"], default="smart")
    return parser


def dumps(value: Any) -> str:
    """``value`` as JSON (what ``json.dumps`` writes for None, bools, numbers, str, dict, list)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return str(encode_basestring_ascii(value))
    if isinstance(value, dict):
        items = (f"{dumps(str(k))}: {dumps(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def load_context(f: Any) -> Context:
    """The hook context from the open (binary) file ``f``."""
    return marshal.load(f)  # noqa: S302 - the lab's own file


def save_context(ctx: Context, f: Any) -> None:
    """Write ``ctx`` to the open (binary) file ``f`` (the format both Pythons read)."""
    marshal.dump(ctx, f, 4)


_out = dumps


# -- relations ---------------------------------------------------------------------------


def _relation(ctx: Context, ref: str | None) -> dict[str, Any]:
    """The relation ``-r`` names (``endpoint:id`` or ``id``), else the hook's relation."""
    ref = ref or os.environ.get("JUJU_RELATION_ID") or ""
    if not ref:
        raise ToolError("no relation id specified")
    endpoint, _, number = ref.rpartition(":")
    for relation in ctx["relations"]:
        if str(relation["id"]) == number and endpoint in ("", relation["endpoint"]):
            return relation
    raise ToolError(f'invalid value "{ref}" for option -r: relation not found')


def _peer_or_leader(ctx: Context, relation: dict[str, Any]) -> None:
    if relation["kind"] != "peer" and not ctx["leader"]:
        raise ToolError("permission denied")


def relation_ids(ctx: Context, argv: list[str]) -> str:
    """``relation-ids ENDPOINT``: ``endpoint:id`` of each relation on that endpoint."""
    parser = _parser("relation-ids")
    parser.add_argument("endpoint")
    args = parser.parse_args(argv)
    if args.endpoint not in ctx["endpoints"]:
        raise ToolError(f'relation-ids: no endpoint named "{args.endpoint}"')
    found = [
        f"{r['endpoint']}:{r['id']}" for r in ctx["relations"] if r["endpoint"] == args.endpoint
    ]
    return _out(found)


def relation_list(ctx: Context, argv: list[str]) -> str:
    """``relation-list [-r REF] [--app]``: remote units in scope, or the remote application."""
    parser = _parser("relation-list")
    parser.add_argument("-r", "--relation")
    parser.add_argument("--app", action="store_true")
    args = parser.parse_args(argv)
    relation = _relation(ctx, args.relation)
    if args.app:
        return _out(relation["remote_app"])
    return _out(sorted(relation["remote_units"], key=lambda u: int(u.rsplit("/", 1)[1])))


def _databag(ctx: Context, relation: dict[str, Any], who: str, app: bool) -> dict[str, str]:
    if app:
        if who == ctx["app"]:
            _peer_or_leader(ctx, relation)
            return relation["local_app_data"]
        if who == relation["remote_app"]:
            return relation["remote_app_data"]
        raise ToolError(f'cannot read settings for application "{who}": not in relation')
    if who == ctx["unit"]:
        return relation["local_unit_data"]
    if who in relation["remote_units"]:
        return relation["remote_units"][who]
    raise ToolError(f'cannot read settings for unit "{who}" in relation {relation["id"]}')


def relation_get(ctx: Context, argv: list[str]) -> str:
    """``relation-get [-r REF] [--app] [KEY|-] [UNIT|APP]``."""
    parser = _parser("relation-get")
    parser.add_argument("-r", "--relation")
    parser.add_argument("--app", action="store_true")
    parser.add_argument("key", nargs="?", default="-")
    parser.add_argument("who", nargs="?")
    args = parser.parse_args(argv)
    relation = _relation(ctx, args.relation)
    who = args.who or os.environ.get("JUJU_REMOTE_UNIT") or ""
    if args.app and not args.who:
        who = os.environ.get("JUJU_REMOTE_APP") or ""
    if not who:
        raise ToolError("relation-get: no unit or application specified")
    data = _databag(ctx, relation, who, args.app)
    return _out(data if args.key == "-" else data.get(args.key))


def relation_set(ctx: Context, argv: list[str], stdin: str) -> str:
    """``relation-set [-r REF] [--app] [--file PATH|-] [KEY=VALUE…]``; empty values delete."""
    parser = _parser("relation-set")
    parser.add_argument("-r", "--relation")
    parser.add_argument("--app", action="store_true")
    parser.add_argument("--file")
    parser.add_argument("pairs", nargs="*")
    args = parser.parse_args(argv)
    relation = _relation(ctx, args.relation)
    values: dict[str, str] = {}
    if args.file is not None:
        text = stdin if args.file == "-" else open(args.file).read()  # noqa: SIM115
        if text.strip():
            import json  # only here (one relation-set a hook at most): json is slow to load

            values.update(json.loads(text))
    for pair in args.pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ToolError(f'relation-set: expected "key=value", got "{pair}"')
        values[key] = value
    if args.app:
        if not ctx["leader"]:
            raise ToolError("cannot write relation settings: this unit is not the leader")
        bag = relation["local_app_data"]
    else:
        bag = relation["local_unit_data"]
    for key, value in values.items():
        if not isinstance(value, str):
            raise ToolError(f"relation-set: value of {key!r} is not a string")
        if value == "":
            bag.pop(key, None)
        else:
            bag[key] = value
    return ""


# -- config, leadership, status, ports, network ------------------------------------------------


def config_get(ctx: Context, argv: list[str]) -> str:
    """``config-get [KEY]`` (``--all`` is the default with ``--format=json``)."""
    parser = _parser("config-get")
    parser.add_argument("-a", "--all", action="store_true")
    parser.add_argument("key", nargs="?")
    args = parser.parse_args(argv)
    if args.key:
        return _out(ctx["config"].get(args.key))
    return _out(ctx["config"])


def is_leader(ctx: Context, argv: list[str]) -> str:
    """``is-leader``: json true/false."""
    _parser("is-leader").parse_args(argv)
    return _out(bool(ctx["leader"]))


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ToolError(f'invalid boolean value "{text}"')
    return text.lower() == "true"


STATUSES = ("active", "blocked", "maintenance", "waiting", "error", "unknown")


def status_set(ctx: Context, argv: list[str]) -> str:
    """``status-set [--application=BOOL] STATUS [MESSAGE]``."""
    parser = _parser("status-set")
    parser.add_argument("--application", default="false")
    parser.add_argument("status")
    parser.add_argument("message", nargs="?", default="")
    args = parser.parse_args(argv)
    if args.status not in STATUSES[:4]:
        raise ToolError(f'invalid status "{args.status}", expected one of {list(STATUSES[:4])}')
    if _boolean(args.application):
        if not ctx["leader"]:
            raise ToolError("this unit is not the leader")
        ctx["app_status"] = [args.status, args.message]
    else:
        ctx["unit_status"] = [args.status, args.message]
    return ""


def status_get(ctx: Context, argv: list[str]) -> str:
    """``status-get [--include-data] [--application=BOOL]``."""
    parser = _parser("status-get")
    parser.add_argument("--include-data", action="store_true")
    parser.add_argument("--application", default="false")
    args = parser.parse_args(argv)
    if _boolean(args.application):
        if not ctx["leader"]:
            raise ToolError("finding application status: this unit is not the leader")
        status, message = ctx["app_status"]
        return _out(
            {"application-status": {"status": status, "message": message, "status-data": {}}}
        )
    status, message = ctx["unit_status"]
    return _out({"status": status, "message": message, "status-data": {}})


def application_version_set(ctx: Context, argv: list[str]) -> str:
    """``application-version-set VERSION``."""
    parser = _Parser(prog="application-version-set", add_help=False)
    parser.add_argument("version")
    ctx["version"] = parser.parse_args(argv).version
    return ""


def juju_log(ctx: Context, argv: list[str]) -> str:
    """``juju-log [-l|--log-level LEVEL] MESSAGE…``."""
    parser = _Parser(prog="juju-log", add_help=False)
    parser.add_argument("-l", "--log-level", default="INFO")
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("message", nargs="+")
    args = parser.parse_args(argv)
    level = "DEBUG" if args.debug else args.log_level.upper()
    ctx["log"].append(f"{level} {' '.join(args.message)}")
    return ""


def _port_spec(parser: _Parser, argv: list[str]) -> str:
    parser.add_argument("--endpoints")
    parser.add_argument("port")
    args = parser.parse_args(argv)
    if args.endpoints:
        raise ToolError(f"{parser.prog}: --endpoints is not supported by the lab")
    port, _, protocol = args.port.partition("/")
    if port == "icmp":
        return "icmp"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ToolError(f'{parser.prog}: invalid port "{args.port}"')
    return f"{int(port)}/{protocol or 'tcp'}"


def open_port(ctx: Context, argv: list[str]) -> str:
    """``open-port PORT[/PROTOCOL]``."""
    spec = _port_spec(_parser("open-port"), argv)
    if spec not in ctx["ports"]:
        ctx["ports"].append(spec)
    return ""


def close_port(ctx: Context, argv: list[str]) -> str:
    """``close-port PORT[/PROTOCOL]``."""
    spec = _port_spec(_parser("close-port"), argv)
    if spec in ctx["ports"]:
        ctx["ports"].remove(spec)
    return ""


def opened_ports(ctx: Context, argv: list[str]) -> str:
    """``opened-ports``: ``["8443/tcp", …]``."""
    parser = _parser("opened-ports")
    parser.add_argument("--endpoints", action="store_true")
    parser.parse_args(argv)
    return _out(sorted(ctx["ports"]))


def network_get(ctx: Context, argv: list[str]) -> str:
    """``network-get [-r REF] BINDING``: the machine's address for the binding."""
    parser = _parser("network-get")
    parser.add_argument("-r", "--relation")
    parser.add_argument("--bind-address", action="store_true")
    parser.add_argument("--ingress-address", action="store_true")
    parser.add_argument("--egress-subnets", action="store_true")
    parser.add_argument("binding")
    args = parser.parse_args(argv)
    if args.relation:
        _relation(ctx, args.relation)
    address = ctx["bindings"].get(args.binding)
    if address is None:
        raise ToolError(f'no network config found for binding "{args.binding}"')
    subnet = address.rsplit(".", 1)[0] + ".0/24"
    found = {
        "bind-addresses": [
            {
                "mac-address": "",
                "interface-name": "eth0",
                "addresses": [{"hostname": "", "value": address, "cidr": subnet}],
                "macaddress": "",
                "interfacename": "eth0",
            }
        ],
        "egress-subnets": [f"{address}/32"],
        "ingress-addresses": [address],
    }
    if args.bind_address:
        return _out(address)
    if args.ingress_address:
        return _out([address])
    if args.egress_subnets:
        return _out([f"{address}/32"])
    return _out(found)


def goal_state(ctx: Context, argv: list[str]) -> str:
    """``goal-state``: this application's units and, per endpoint, the related ones."""
    _parser("goal-state").parse_args(argv)
    since = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    units = {name: {"status": life, "since": since} for name, life in ctx["app_units"].items()}
    relations: dict[str, dict[str, Any]] = {}
    for relation in ctx["relations"]:
        found = relations.setdefault(relation["endpoint"], {})
        found[relation["remote_app"]] = {"status": "joined", "since": since}
        for unit in relation["remote_units"]:
            found[unit] = {"status": "active", "since": since}
    return _out({"units": units, "relations": relations})


# -- actions -------------------------------------------------------------------------------------


def _action(ctx: Context, tool: str) -> dict[str, Any]:
    if ctx.get("action") is None:
        raise ToolError(f"{tool}: not running an action")
    action: dict[str, Any] = ctx["action"]
    return action


def action_get(ctx: Context, argv: list[str]) -> str:
    """``action-get [KEY]``: the action's parameters."""
    parser = _parser("action-get")
    parser.add_argument("key", nargs="?")
    args = parser.parse_args(argv)
    params = _action(ctx, "action-get")["params"]
    return _out(params.get(args.key) if args.key else params)


def action_set(ctx: Context, argv: list[str]) -> str:
    """``action-set KEY=VALUE…`` (dotted keys nest, as Juju shows them)."""
    results = _action(ctx, "action-set")["results"]
    for pair in argv:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ToolError(f'action-set: argument "{pair}" must be of the form key=value')
        *path, last = key.split(".")
        node = results
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ToolError(f'action-set: key "{key}" conflicts with a value set before')
        node[last] = value
    return ""


def action_fail(ctx: Context, argv: list[str]) -> str:
    """``action-fail [MESSAGE]``."""
    parser = _Parser(prog="action-fail", add_help=False)
    parser.add_argument("message", nargs="*")
    args = parser.parse_args(argv)
    _action(ctx, "action-fail")["failed"] = " ".join(args.message) or "action failed"
    return ""


def action_log(ctx: Context, argv: list[str]) -> str:
    """``action-log MESSAGE``."""
    parser = _Parser(prog="action-log", add_help=False)
    parser.add_argument("message", nargs="+")
    message = " ".join(parser.parse_args(argv).message)
    _action(ctx, "action-log")["log"].append(message)
    return ""


# -- secrets -------------------------------------------------------------------------------------


def _xid(ref: str) -> str:
    """``secret://uuid/XID``, ``secret:XID`` or ``XID`` -> ``XID``."""
    return ref.rsplit("/", 1)[-1].removeprefix("secret:")


def _find_secret(ctx: Context, ref: str | None, label: str | None) -> dict[str, Any]:
    for secret in ctx["secrets"]:
        if secret.get("removed"):
            continue
        if ref is not None and _xid(secret["id"]) == _xid(ref):
            return secret
        if ref is None and label is not None and secret.get("label") == label:
            return secret
    raise ToolError(f'secret "{ref or label}" not found')


def _managed(ctx: Context, secret: dict[str, Any], tool: str) -> None:
    """Only the owner manages a secret; an application's secrets only its leader."""
    if secret["owner"] is None:
        raise ToolError(f'{tool}: permission denied: secret "{secret["id"]}" is not yours')
    if secret["owner"] == "app" and not ctx["leader"]:
        raise ToolError(f"{tool}: permission denied: this unit is not the leader")


def _content(pairs: list[str], tool: str) -> dict[str, str]:
    content: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ToolError(f'{tool}: expected "key=value", got "{pair}"')
        if key.endswith("#file"):
            with open(value) as f:
                content[key.removesuffix("#file")] = f.read()
        elif key.endswith("#base64"):
            raise ToolError(f"{tool}: base64 content is not supported by the lab")
        else:
            content[key] = value
    return content


def _secret_parser(prog: str) -> _Parser:
    parser = _parser(prog)
    parser.add_argument("--label")
    parser.add_argument("--description")
    parser.add_argument("--expire")
    parser.add_argument("--rotate")
    parser.add_argument("--owner", choices=["unit", "application"])
    return parser


def secret_add(ctx: Context, argv: list[str]) -> str:
    """``secret-add [--owner unit|application] [--label L] KEY=VALUE|KEY#file=PATH…``."""
    parser = _secret_parser("secret-add")
    parser.add_argument("pairs", nargs="+")
    args = parser.parse_args(argv)
    owner = "unit" if args.owner == "unit" else "app"
    if owner == "app" and not ctx["leader"]:
        raise ToolError("secret-add: permission denied: this unit is not the leader")
    if args.label and any(s.get("label") == args.label for s in ctx["secrets"]):
        raise ToolError(f'secret-add: secret with label "{args.label}" already exists')
    content = _content(args.pairs, "secret-add")
    uri = f"secret://{ctx['model_uuid']}/{os.urandom(10).hex()}"
    ctx["secrets"].append(
        {
            "id": uri,
            "owner": owner,
            "label": args.label,
            "description": args.description,
            "expire": args.expire,
            "rotate": args.rotate,
            "revision": 1,
            "latest": content,
            "tracked": content,
            "tracked_revision": 1,
            "grants": {},
            "new": True,
        }
    )
    return uri


def secret_get(ctx: Context, argv: list[str]) -> str:
    """``secret-get [ID] [--label L] [--refresh|--peek]``."""
    parser = _parser("secret-get")
    parser.add_argument("id", nargs="?")
    parser.add_argument("--label")
    parser.add_argument("--refresh", action="store_true")
    parser.add_argument("--peek", action="store_true")
    args = parser.parse_args(argv)
    if args.id is None and args.label is None:
        raise ToolError("secret-get: require either a secret URI or label")
    secret = _find_secret(ctx, args.id, args.label)
    if args.id is not None and args.label is not None:
        secret["label"] = args.label  # owner: its label; observer: this unit's label for it
    if secret["owner"] is not None or args.peek:
        return _out(secret["latest"])
    if args.refresh:
        secret["tracked"], secret["tracked_revision"] = secret["latest"], secret["revision"]
    return _out(secret["tracked"])


def secret_set(ctx: Context, argv: list[str]) -> str:
    """``secret-set ID [--label L] [KEY=VALUE…]``: a new revision when the content changes."""
    parser = _secret_parser("secret-set")
    parser.add_argument("id")
    parser.add_argument("pairs", nargs="*")
    args = parser.parse_args(argv)
    secret = _find_secret(ctx, args.id, None)
    _managed(ctx, secret, "secret-set")
    for field in ("label", "description", "expire", "rotate"):
        if getattr(args, field) is not None:
            secret[field] = getattr(args, field)
    if args.pairs:
        content = _content(args.pairs, "secret-set")
        if content != secret["latest"]:
            if not secret.get("dirty") and not secret.get("new"):
                secret["revision"] += 1  # several sets in one hook make one revision
            secret["latest"], secret["dirty"] = content, True
            secret["tracked"], secret["tracked_revision"] = content, secret["revision"]
    return ""


def _grant_target(ctx: Context, relation: dict[str, Any], unit: str | None) -> str:
    if unit is None:
        return str(relation["remote_app"])
    if unit not in relation["remote_units"]:
        raise ToolError(f'secret-grant: unit "{unit}" is not in relation {relation["id"]}')
    return unit


def secret_grant(ctx: Context, argv: list[str]) -> str:
    """``secret-grant --relation RID [--unit UNIT] ID``."""
    parser = _parser("secret-grant")
    parser.add_argument("-r", "--relation", required=True)
    parser.add_argument("--unit")
    parser.add_argument("id")
    args = parser.parse_args(argv)
    secret = _find_secret(ctx, args.id, None)
    _managed(ctx, secret, "secret-grant")
    relation = _relation(ctx, args.relation)
    names = secret["grants"].setdefault(str(relation["id"]), [])
    target = _grant_target(ctx, relation, args.unit)
    if target not in names:
        names.append(target)
        names.sort()
    return ""


def secret_revoke(ctx: Context, argv: list[str]) -> str:
    """``secret-revoke [--relation RID] [--app APP|--unit UNIT] ID``."""
    parser = _parser("secret-revoke")
    parser.add_argument("-r", "--relation")
    parser.add_argument("--app")
    parser.add_argument("--unit")
    parser.add_argument("id")
    args = parser.parse_args(argv)
    secret = _find_secret(ctx, args.id, None)
    _managed(ctx, secret, "secret-revoke")
    rids = [str(_relation(ctx, args.relation)["id"])] if args.relation else list(secret["grants"])
    for rid in rids:
        names = secret["grants"].get(rid, [])
        for name in list(names):
            if (args.unit or args.app) in (None, name) or (
                args.app and name.startswith(f"{args.app}/")
            ):
                names.remove(name)
        if not names:
            secret["grants"].pop(rid, None)
    return ""


def secret_remove(ctx: Context, argv: list[str]) -> str:
    """``secret-remove ID [--revision N]``: the lab keeps one revision, so any removes it."""
    parser = _parser("secret-remove")
    parser.add_argument("--revision", type=int)
    parser.add_argument("id")
    args = parser.parse_args(argv)
    secret = _find_secret(ctx, args.id, None)
    _managed(ctx, secret, "secret-remove")
    if args.revision is None or args.revision == secret["revision"]:
        secret["removed"] = True
    return ""


def secret_ids(ctx: Context, argv: list[str]) -> str:
    """``secret-ids``: the secrets this unit (or, leader, its application) owns."""
    _parser("secret-ids").parse_args(argv)
    owned = [
        s["id"]
        for s in ctx["secrets"]
        if not s.get("removed")
        and (s["owner"] == "unit" or (s["owner"] == "app" and ctx["leader"]))
    ]
    return _out(owned)


def secret_info_get(ctx: Context, argv: list[str]) -> str:
    """``secret-info-get ID|--label L``: the owner's view (revision, label, rotation)."""
    parser = _parser("secret-info-get")
    parser.add_argument("id", nargs="?")
    parser.add_argument("--label")
    args = parser.parse_args(argv)
    secret = _find_secret(ctx, args.id, args.label)
    _managed(ctx, secret, "secret-info-get")
    info = {
        "revision": secret["revision"],
        "label": secret.get("label") or "",
        "owner": "application" if secret["owner"] == "app" else "unit",
        "description": secret.get("description") or "",
        "rotation": secret.get("rotate") or "never",
    }
    if secret.get("expire"):
        info["expiry"] = secret["expire"]
    return _out({_xid(secret["id"]): info})


# -- relation model, state, storage, credentials -------------------------------------------


def relation_model_get(ctx: Context, argv: list[str]) -> str:
    """``relation-model-get [-r REF]``: the remote application's model (the lab has one)."""
    parser = _parser("relation-model-get")
    parser.add_argument("-r", "--relation")
    args = parser.parse_args(argv)
    _relation(ctx, args.relation)
    return _out({"uuid": ctx["model_uuid"]})


def state_get(ctx: Context, argv: list[str]) -> str:
    """``state-get [KEY]``: the unit's controller-side state (a key's value, or all)."""
    parser = _parser("state-get")
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("key", nargs="?")
    args = parser.parse_args(argv)
    state = ctx["state"]
    if args.key is None:
        return _out(state)
    if args.key not in state:
        if args.strict:
            raise ToolError(f'state-get: key "{args.key}" not found')
        return ""
    return str(state[args.key])


def state_set(ctx: Context, argv: list[str], stdin: str) -> str:
    """``state-set [--file PATH|-] [KEY=VALUE…]``: the file is a YAML map (what ops writes)."""
    parser = _parser("state-set")
    parser.add_argument("--file")
    parser.add_argument("pairs", nargs="*")
    args = parser.parse_args(argv)
    values: dict[str, str] = {}
    if args.file is not None:
        text = stdin if args.file == "-" else open(args.file).read()  # noqa: SIM115
        import site  # the tools start without site-packages: YAML only when it is needed

        site.main()
        import yaml

        loaded = yaml.safe_load(text) or {}
        if not isinstance(loaded, dict):
            raise ToolError("state-set: --file must hold a map of keys to values")
        values.update({str(k): str(v) for k, v in loaded.items()})
    for pair in args.pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ToolError(f'state-set: expected "key=value", got "{pair}"')
        values[key] = value
    for key, value in values.items():
        if value == "":
            ctx["state"].pop(key, None)
        else:
            ctx["state"][key] = value
    return ""


def state_delete(ctx: Context, argv: list[str]) -> str:
    """``state-delete KEY``."""
    parser = _parser("state-delete")
    parser.add_argument("key")
    ctx["state"].pop(parser.parse_args(argv).key, None)
    return ""


def storage_list(ctx: Context, argv: list[str]) -> str:
    """``storage-list [NAME]``: the lab attaches no storage (the charms declare none)."""
    parser = _parser("storage-list")
    parser.add_argument("name", nargs="?")
    parser.parse_args(argv)
    return _out([])


def storage_get(ctx: Context, argv: list[str]) -> str:
    """``storage-get [-s ID] [KEY]``: no storage is attached, so none is found."""
    parser = _parser("storage-get")
    parser.add_argument("-s")
    parser.add_argument("key", nargs="?")
    args = parser.parse_args(argv)
    raise ToolError(
        f'storage-get: storage "{args.s or os.environ.get("JUJU_STORAGE_ID", "")}" not found'
    )


def credential_get(ctx: Context, argv: list[str]) -> str:
    """``credential-get``: refused, as on a machine model whose application is not trusted."""
    _parser("credential-get").parse_args(argv)
    raise ToolError("credential-get: cannot access cloud credentials: permission denied")


# -- dispatch ------------------------------------------------------------------------------


TOOLS: dict[str, Any] = {
    "relation-ids": relation_ids,
    "relation-list": relation_list,
    "relation-get": relation_get,
    "config-get": config_get,
    "is-leader": is_leader,
    "status-set": status_set,
    "status-get": status_get,
    "application-version-set": application_version_set,
    "juju-log": juju_log,
    "open-port": open_port,
    "close-port": close_port,
    "opened-ports": opened_ports,
    "network-get": network_get,
    "goal-state": goal_state,
    "action-get": action_get,
    "action-set": action_set,
    "action-fail": action_fail,
    "action-log": action_log,
    "secret-add": secret_add,
    "secret-get": secret_get,
    "secret-set": secret_set,
    "secret-grant": secret_grant,
    "secret-revoke": secret_revoke,
    "secret-remove": secret_remove,
    "secret-ids": secret_ids,
    "secret-info-get": secret_info_get,
    "relation-model-get": relation_model_get,
    "state-get": state_get,
    "state-delete": state_delete,
    "storage-list": storage_list,
    "storage-get": storage_get,
    "credential-get": credential_get,
}
#: Tools taking standard input (``--file -``).
STDIN_TOOLS = {"relation-set": relation_set, "state-set": state_set}
#: Juju's other hook tools: linked too, so that a charm calling one fails naming it.
UNIMPLEMENTED = (
    "add-metric",
    "juju-reboot",
    "leader-get",
    "leader-set",
    "payload-register",
    "payload-status-set",
    "payload-unregister",
    "pod-spec-get",
    "pod-spec-set",
    "k8s-raw-get",
    "k8s-raw-set",
    "k8s-spec-get",
    "k8s-spec-set",
    "resource-get",
    "storage-add",
    "unit-get",
)
#: Every tool name the lab links into a unit's tools directory.
NAMES = (*TOOLS, *STDIN_TOOLS, *UNIMPLEMENTED)


def run(name: str, argv: list[str], stdin: str = "") -> str:
    """Run tool ``name`` against the hook context file (locked: one tool at a time)."""
    path = os.environ.get(CONTEXT_ENV)
    if not path:
        raise ToolError(f"{name}: not running in a hook ({CONTEXT_ENV} is not set)")
    with open(path, "r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        ctx = load_context(f)
        calls = ctx.setdefault("tool_calls", {})
        calls[name] = calls.get(name, 0) + 1
        if name in STDIN_TOOLS:
            out = STDIN_TOOLS[name](ctx, argv, stdin)
        elif name in TOOLS:
            out = TOOLS[name](ctx, argv)
        else:
            raise ToolError(f"{name}: not a hook tool the lab implements")
        f.seek(0)
        save_context(ctx, f)
        f.truncate()
    return out


def main() -> int:
    """Entry point: the tool's name is the name it was called by."""
    name = os.path.basename(sys.argv[0])
    argv = sys.argv[1:]
    try:
        stdin = sys.stdin.read() if name in STDIN_TOOLS and "-" in argv else ""
        out = run(name, argv, stdin)
    except ToolError as exc:
        print(f"ERROR {exc}", file=sys.stderr)
        return 2 if "unrecognized arguments" in str(exc) else 1
    except (OSError, ValueError) as exc:
        print(f"ERROR {name}: {exc}", file=sys.stderr)
        return 1
    if out:
        print(out)
    return 0
