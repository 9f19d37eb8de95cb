"""Run a chart's Vega expressions and data transforms in Python, for tests.

A chart that computes what it draws from a parameter (``transform_calculate``,
``transform_filter`` with a Vega expression) is checked by running the very
expressions stored in its spec here and comparing the result with the package's own
Python functions. Only the subset of Vega the book's charts use is understood:
arithmetic, comparisons, ``&&``/``||``, the functions listed in ``FUNCTIONS``, ``datum.x``
and ``datum['x']``, and the transforms ``calculate``, ``filter``, ``flatten`` and
``aggregate`` (mean, sum, count). Anything else raises, so a test never passes by
skipping what it does not understand.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Decimal


def _vega_format(value, spec: str) -> str:
    """d3-format for the specifiers the charts use, rounding as JavaScript does.

    d3 formats with ``toFixed``/``toExponential``, which round the exact binary value
    half away from zero (1.25 -> "1.3"), where Python rounds half to even ("1.2"); and
    it writes a negative number's sign as the minus sign U+2212 ("−0.5").
    """
    return re.sub(r"^-", "\u2212", _d3_format(value, spec))


def _d3_format(value, spec: str) -> str:
    if spec == "~g":  # d3's "g" with trailing zeros trimmed: Python's "g"
        return format(float(value), "g")
    m = re.fullmatch(r"([+]?)(,?)(?:\.(\d+))?([fed])", spec)
    if not m:
        raise NotImplementedError(f"format specifier {spec!r}")
    sign, comma, digits, kind = m.groups()
    if kind == "d":  # Math.round: halves go up
        return format(math.floor(value + 0.5), sign + comma + "d")
    exact = Decimal(float(value))
    p = int(digits or 6)
    if kind == "f":
        rounded = exact.quantize(Decimal(1).scaleb(-p), rounding=ROUND_HALF_UP)
        return format(rounded, f"{sign}{comma}.{p}f")
    if exact == 0:
        return format(0.0, f"{sign}.{p}e")
    shift = exact.adjusted() - p  # keep p + 1 significant digits
    rounded = exact.scaleb(-shift).quantize(Decimal(1), rounding=ROUND_HALF_UP).scaleb(shift)
    out = format(rounded, f"{sign}.{p}e")
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", out)  # JavaScript writes e-4, not e-04


def _if(test, then, otherwise):
    return then if test else otherwise


FUNCTIONS = {
    "abs": abs,
    "cos": math.cos,
    "sin": math.sin,
    "sqrt": math.sqrt,
    "log": math.log,
    "exp": math.exp,
    "pow": math.pow,
    "floor": math.floor,
    "round": lambda x: math.floor(x + 0.5),  # JavaScript's Math.round
    "min": min,
    "max": max,
    "PI": math.pi,
    "format": _vega_format,
    "sequence": lambda *a: list(range(*[int(v) for v in a])),
    "toString": str,
    "_if": _if,
    "true": True,
    "false": False,
}


class _Datum(dict):
    def __getattr__(self, name):
        return self[name]


def evaluate(expr: str, datum: dict | None = None, params: dict | None = None):
    """The value of a Vega expression for one data row and the parameters' values."""
    code = re.sub(r"\bif\(", "_if(", expr)
    code = code.replace("&&", " and ").replace("||", " or ").replace("===", "==").replace("!==", "!=")
    if re.search(r"(?<![=!<>])!(?!=)|\?|=>", code):
        raise NotImplementedError(f"unsupported syntax in {expr!r}")
    scope = {**FUNCTIONS, **(params or {}), "datum": _Datum(datum or {})}
    return eval(code, {"__builtins__": {}}, scope)  # noqa: S307 - expressions of our own charts


def run_transforms(rows: list[dict], transforms: list[dict], params: dict) -> list[dict]:
    """Apply a Vega-Lite ``transform`` list to ``rows`` with the given parameter values."""
    rows = [dict(r) for r in rows]
    for t in transforms:
        if "calculate" in t:
            for r in rows:
                r[t["as"]] = evaluate(t["calculate"], r, params)
        elif "filter" in t:
            test = t["filter"]
            if not isinstance(test, str):
                raise NotImplementedError(f"filter {test!r}")
            rows = [r for r in rows if evaluate(test, r, params)]
        elif "flatten" in t:
            out = []
            for r in rows:
                for values in zip(*(r[f] for f in t["flatten"])):
                    out.append({**r, **dict(zip(t["flatten"], values))})
            rows = out
        elif "aggregate" in t:
            groups: dict[tuple, list[dict]] = {}
            for r in rows:
                groups.setdefault(tuple(r[g] for g in t.get("groupby", [])), []).append(r)
            out = []
            for key, members in groups.items():
                row = dict(zip(t.get("groupby", []), key))
                for a in t["aggregate"]:
                    values = [m[a["field"]] for m in members] if "field" in a else members
                    op = {"mean": lambda v: sum(v) / len(v), "sum": sum, "count": len}[a["op"]]
                    row[a["as"]] = op(values)
                out.append(row)
            rows = out
        else:
            raise NotImplementedError(f"transform {t!r}")
    return rows


def layers(spec: dict):
    """Every unit spec (one with a ``mark``) of a chart, with its data rows and the
    transforms of its parents resolved: yields ``(unit, rows, transforms)``."""
    datasets = spec.get("datasets", {})

    def walk(part, data, transforms):
        data = part.get("data", data)
        transforms = transforms + part.get("transform", [])
        if "mark" in part:
            yield part, _rows(data, datasets), transforms
        for key in ("layer", "hconcat", "vconcat", "concat"):
            for sub in part.get(key, []):
                yield from walk(sub, data, transforms)
        if "spec" in part:
            yield from walk(part["spec"], data, transforms)

    yield from walk(spec, spec.get("data"), [])


def _rows(data, datasets) -> list[dict]:
    if data is None:
        return []
    if "name" in data:
        return datasets[data["name"]]
    if "values" in data:
        return data["values"]
    raise NotImplementedError(f"data {data!r}")


def parameter_values(spec: dict) -> dict:
    """Every parameter of a chart at its starting value."""
    return {p["name"]: p.get("value") for p in _all_params(spec)}


def shown(spec: dict, name: str, **params) -> list[dict]:
    """The rows the unit spec called ``name`` draws with its controls at their starting
    positions, except those given in ``params``."""
    values = {**parameter_values(spec), **params}
    for part, rows, transforms in layers(spec):
        if re.fullmatch(rf"{re.escape(name)}(_\d+)?", part.get("name", "")):  # altair may add "_1"
            return run_transforms(rows, transforms, values)
    raise KeyError(f"no unit chart named {name!r}")


def _all_params(spec: dict):
    yield from spec.get("params", [])
    for key in ("layer", "hconcat", "vconcat", "concat"):
        for sub in spec.get(key, []):
            yield from _all_params(sub)
    if "spec" in spec:
        yield from _all_params(spec["spec"])
