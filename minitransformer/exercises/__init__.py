"""Exercises with automatic feedback: ``check(key, fn)``, ``hint(key)``, ``solution(key)``."""

from .core import EXERCISES, Case, CheckResult, Exercise, Mistake, check, get, hint, register, solution

__all__ = ["check", "hint", "solution", "get", "register", "Exercise", "Case", "Mistake", "CheckResult", "EXERCISES"]
