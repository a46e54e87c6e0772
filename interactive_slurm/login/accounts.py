"""doctor's account and QOS check: do the accounts and QOS the profiles name exist for the user?

Slurm checks an ``--account``/``--qos`` only where it keeps accounting (``scontrol show config``:
``AccountingStorageType = accounting_storage/slurmdbd``) and enforces associations
(``AccountingStorageEnforce`` with ``associations``, ``limits``, ``safe`` or ``qos``); with
``accounting_storage/none`` any name is accepted as it is. Where accounting is kept,
``sacctmgr -nP show assoc user=NAME format=account,qos`` lists the user's associations: a
profile naming an account the user has no association with, or a QOS none of them allows, is
refused by sbatch (``Invalid account or account/partition combination``) or left pending
(``InvalidAccount``, ``InvalidQOS``).

The parsers (:func:`parse_config`, :func:`parse_associations`) and :func:`judge` are pure;
:func:`check` asks Slurm through the runner.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Sequence
from dataclasses import dataclass

from interactive_slurm.base import checks
from interactive_slurm.base.checks import Check, fail, ok, warn
from interactive_slurm.base.errors import CommandError, InteractiveSlurmError
from interactive_slurm.base.runner import Runner, check_result
from interactive_slurm.login import profiles

NAME = "accounts"
#: ``AccountingStorageEnforce`` values that make Slurm refuse an account or QOS the user lacks.
ENFORCING = frozenset({"associations", "limits", "safe", "qos"})
_CONFIG_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


@dataclass(frozen=True)
class Accounting:
    """What ``scontrol show config`` says about accounting."""

    storage: str  # AccountingStorageType, e.g. accounting_storage/slurmdbd
    enforce: tuple[str, ...]  # AccountingStorageEnforce, lower case ("none": empty)

    @property
    def kept(self) -> bool:
        return self.storage not in ("", "(null)") and not self.storage.endswith("/none")

    @property
    def enforced(self) -> bool:
        return bool(ENFORCING & set(self.enforce))


@dataclass(frozen=True)
class Association:
    account: str
    qos: tuple[str, ...]


@dataclass(frozen=True)
class Named:
    """The account and QOS one profile's table names (None: not named)."""

    profile: str
    kind: str
    account: str | None
    qos: str | None


def parse_config(output: str) -> Accounting:
    """The accounting lines of ``scontrol show config`` output (``Key = value`` lines)."""
    fields: dict[str, str] = {}
    for line in output.splitlines():
        m = _CONFIG_LINE.match(line.strip())
        if m:
            fields.setdefault(m.group(1), m.group(2))
    enforce = fields.get("AccountingStorageEnforce", "none").lower()
    return Accounting(
        storage=fields.get("AccountingStorageType", ""),
        enforce=tuple(e for e in (x.strip() for x in enforce.split(",")) if e and e != "none"),
    )


def parse_associations(output: str) -> list[Association]:
    """The rows of ``sacctmgr -nP show assoc user=NAME format=account,qos`` (``acct|q1,q2``)."""
    out = []
    for line in output.splitlines():
        if not line.strip():
            continue
        account, _, qos = line.strip().partition("|")
        out.append(Association(account.strip(), tuple(q for q in qos.strip().split(",") if q)))
    return out


def named(profs: Sequence[profiles.Profile]) -> list[Named]:
    """Every profile table that names an account or a QOS."""
    return [Named(p.name, kind, p.resources(kind).account, p.resources(kind).qos)
            for p in profs for kind in profiles.KINDS
            if p.resources(kind).account or p.resources(kind).qos]


def _set(n: Named, key: str, values: Sequence[str]) -> str:
    """The ``profiles set`` command for ``key``: the one value there is, pasteable; a choice of
    several; with none, the key removed."""
    value = values[0] if len(values) == 1 else f"<one of {', '.join(values)}>" if values else ""
    return f"interactive-slurm profiles set {n.profile} {n.kind}.{key}={value}"


def judge(acct: Accounting, assocs: Sequence[Association], wanted: Sequence[Named], used: str,
          user: str) -> list[Check]:
    """The verdict on the user's associations and every account/QOS a profile names (pure).

    A missing account or QOS fails the profile the connections use and warns for the others;
    where Slurm does not enforce associations it only warns."""
    where = f"AccountingStorageType={acct.storage}, AccountingStorageEnforce=" \
            f"{','.join(acct.enforce) or 'none'}"
    accounts = sorted({a.account for a in assocs if a.account})
    have = ", ".join(accounts) or "none"
    out: list[Check] = []
    if not accounts:
        report = fail if acct.enforced else warn
        out.append(report(NAME, f"Slurm keeps accounting here ({where}), but {user} has no "
                                "association (no account) in it",
                          "ask your admins to add you to an account (sacctmgr add user "
                          f"{user} account=THEIRS); every job is refused until then"))
    else:
        out.append(ok(NAME, f"Slurm keeps accounting here ({where}); your accounts: {have}"))
    for n in wanted:
        report = fail if (n.profile == used and acct.enforced) else warn
        problems, fixes = [], []
        if n.account and n.account not in accounts:
            problems.append(f"account {n.account} is not one of yours ({have})")
            fixes.append(_set(n, "account", accounts))
        if n.qos:
            pool = [a for a in assocs if a.account == n.account] if n.account else list(assocs)
            allowed = sorted({q for a in pool for q in a.qos})
            if n.qos not in allowed:
                whose = f"account {n.account}" if n.account else "your accounts"
                problems.append(f"QOS {n.qos} is not allowed for {whose} "
                                f"({', '.join(allowed) or 'none'})")
                fixes.append(_set(n, "qos", allowed))
        if problems:
            out.append(report(f"{NAME} {n.profile} [{n.kind}]", "; ".join(problems),
                              "; ".join(fixes) + f" (`sacctmgr show assoc user={user}` lists "
                                                 "yours; your admins add others)"))
        else:
            what = ", ".join(x for x in (n.account and f"account {n.account}",
                                         n.qos and f"QOS {n.qos}") if x)
            out.append(ok(f"{NAME} {n.profile} [{n.kind}]", f"{what}: yours"))
    return out


def _loadable() -> list[profiles.Profile]:
    """The profiles that load (the profile checks report the others)."""
    out = []
    for name in sorted(profiles.available()):
        try:
            out.append(profiles.load(name))
        except InteractiveSlurmError:
            continue
    return out


def _user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def check(runner: Runner, used: str, user: str | None = None) -> list[Check]:
    """The accounting check: one line where Slurm keeps none; else the user's associations and
    every account/QOS a profile names."""
    try:
        config = check_result(runner.run(["scontrol", "show", "config"], check=False, timeout=30))
    except CommandError as exc:
        return [warn(NAME, f"not checked: scontrol show config failed: {exc}",
                     "run `scontrol show config` by hand; if Slurm itself fails, tell your admins")]
    acct = parse_config(config.stdout)
    wanted = named(_loadable())
    if not acct.kept:
        listed = "; ".join(
            f"profile {n.profile} [{n.kind}] "
            + ", ".join(x for x in (n.account and f"account={n.account}",
                                    n.qos and f"qos={n.qos}") if x)
            for n in wanted)
        return [ok(NAME, f"Slurm keeps no accounting here (AccountingStorageType="
                         f"{acct.storage or 'unset'}), so it checks no account or QOS"
                         + (f": passed on unchecked: {listed}" if listed else ""))]
    user = user or _user()
    try:
        result = check_result(runner.run(
            ["sacctmgr", "-nP", "show", "assoc", f"user={user}", "format=account,qos"],
            check=False, timeout=30))
    except CommandError as exc:
        what, _ = checks.split_fix(str(exc))
        return [warn(NAME, f"not checked: Slurm keeps accounting, but sacctmgr did not answer: "
                           f"{what}",
                     "run `sacctmgr show assoc user=$USER` by hand; if slurmdbd is down, tell "
                     "your admins")]
    return judge(acct, parse_associations(result.stdout), wanted, used, user)
