"""The rule language: load YAML with positions, check names and types, compile once."""

from segstream.core.rulelang.errors import RuleError, RuleErrors
from segstream.core.rulelang.ruleset import RuleSet, compile_rules, load_rules, rules_version

__all__ = ["RuleError", "RuleErrors", "RuleSet", "compile_rules", "load_rules", "rules_version"]
