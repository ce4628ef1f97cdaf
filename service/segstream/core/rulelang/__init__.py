"""The rule language: load YAML with positions, check names and types, compile once."""

from segstream.core.rulelang.errors import RuleError, RuleErrors
from segstream.core.rulelang.ruleset import RuleSet, load_rules

__all__ = ["RuleError", "RuleErrors", "RuleSet", "load_rules"]
