"""A run imports only the module of the command it names (start-up time of ``hallmark sbom``/``scan``)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import hallmark.cli as cli
names = sorted(cli.registered_names())  # nothing yet
everything = sorted(cli.app.registered_commands and cli.registered_names())
fast = {}
for name in everything:
    cli._app.registered_commands.clear(); cli._app.registered_groups.clear(); cli._loaded.clear()
    cli.load_for([name, "--help"])
    fast[name] = [name in cli.registered_names(), len(cli._loaded)]
print(json.dumps({"before": names, "all": everything, "fast": fast}))
"""

HEAVY = ("aiohttp", "sqlalchemy", "hallmark.app", "hallmark.metadata", "hallmark.signing", "cryptography")


def test_every_command_registers_from_its_own_module() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    assert doc["before"] == []  # importing the package registers nothing by itself
    assert {"scan", "sbom", "db", "worker", "serve", "user", "key"} <= set(doc["all"])
    slow = {name: got for name, got in doc["fast"].items() if got != [True, 1]}
    assert slow == {}  # each found after importing one module (else: name the module in MODULE_OF)


def _modules_after(*argv: str) -> set[str]:
    code = (
        "import sys\nfrom hallmark.cli import main\nsys.argv = ['hallmark', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nprint('\\n'.join(sys.modules), file=sys.stderr)\n"
    )
    res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    return set(res.stderr.split())


def test_sbom_and_scan_do_not_import_the_server() -> None:
    for argv in (("sbom", "--help"), ("scan", "--help"), ("--version",)):
        mods = _modules_after(*argv)
        assert "hallmark.cli" in mods
        assert not {m for m in mods if m.split(".")[0] in HEAVY or m.startswith(HEAVY)}, argv


def test_listing_every_command_imports_no_server_database_or_network_library() -> None:
    """``hallmark --help`` imports every command module to list them (it took 0.7 s when serve,
    the signing commands and the configuration pulled in aiohttp, SQLAlchemy, httpx and pydantic)."""
    mods = _modules_after("--help")
    assert {"hallmark.cli.serve", "hallmark.cli.signing", "hallmark.cli.k8s", "hallmark.cli.provenance"} <= mods
    heavy = (*(h for h in HEAVY if h != "cryptography"), "httpx", "pydantic", "hallmark.config")
    # cryptography stays: `hallmark tls` builds certificates in every function (~20 ms)
    assert not {m for m in mods if m.split(".")[0] in heavy or m.startswith(heavy)}
