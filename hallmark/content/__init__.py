"""Content checks: malware (YARA, SHA-256 blocklist, ClamAV), exposed secrets (gitleaks rules)
and image-configuration checks (CIS Docker Benchmark).

Wiring for the layer walker::

    rules = load_rules(data_dir / "rules")          # once per process / after `db update`
    scanner = ContentScanner(rules, ScanOptions())  # one per worker thread
    history = LayerHistory()
    for each layer i, each tar entry:
        history.record_tar_member(i, name)
        regular file -> scanner.scan_file(name, i, layer_digest, reader, size, mode=mode)
        directory    -> scanner.scan_metadata(name, i, layer_digest, mode, is_dir=True)
    scanner.scan_config(config_json)
    findings = correlate_layers(all_findings, history)
"""

from hallmark.content.archives import ArchiveLimits
from hallmark.content.clamd import ClamdClient, ClamdConfig, ClamdError
from hallmark.content.config_checks import CHECKS, CIS_VERSION, ConfigCheck
from hallmark.content.layers import LayerHistory, LayerView, correlate_layers, still_downloadable
from hallmark.content.model import Finding, ScanOutcome, Severity, Skip, Status
from hallmark.content.rules import RuleBundle, RulesError, load_rules
from hallmark.content.scanner import ContentScanner, ScanOptions, normalize_path
from hallmark.content.tarlayer import iter_tar_layer, scan_layers

__all__ = [
    "CHECKS",
    "CIS_VERSION",
    "ArchiveLimits",
    "ClamdClient",
    "ClamdConfig",
    "ClamdError",
    "ConfigCheck",
    "ContentScanner",
    "Finding",
    "LayerHistory",
    "LayerView",
    "RuleBundle",
    "RulesError",
    "ScanOptions",
    "ScanOutcome",
    "Severity",
    "Skip",
    "Status",
    "correlate_layers",
    "iter_tar_layer",
    "load_rules",
    "normalize_path",
    "scan_layers",
    "still_downloadable",
]
