"""CloudWatch metric math as template.yaml's alarms write it (IF, FILL, + - * /, comparisons), evaluated over one
period's sums: what an alarm would have seen, given what the handlers really emitted."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

_ARITHMETIC: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_COMPARISONS: dict[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
}


class NoDataPoint(LookupError):
    """A metric nothing emitted in the period: CloudWatch has no value for it (FILL gives one)."""


def evaluate(expression: str, values: Mapping[str, float]) -> float:
    """The expression's value; `values` holds the metrics (by Id) that have a data point in the period."""
    return _value(ast.parse(" ".join(expression.split()), mode="eval").body, values)


def alarm_value(alarm: Mapping[str, Any], sums: Mapping[str, float]) -> float:
    """An alarm's returned expression, over each metric's Sum by name (a metric absent from `sums` has no data)."""
    queries = alarm["Metrics"]
    by_id = {q["Id"]: sums[q["MetricStat"]["Metric"]["MetricName"]] for q in queries if "MetricStat" in q}
    present = {query_id: value for query_id, value in by_id.items() if value}
    (returned,) = [q["Expression"] for q in queries if q.get("ReturnData") and "Expression" in q]
    return evaluate(returned, present)


def _value(node: ast.expr, values: Mapping[str, float]) -> float:
    match node:
        case ast.Constant(value=int() | float() as number) if not isinstance(number, bool):
            return float(number)
        case ast.Name(id=name):
            if name not in values:
                raise NoDataPoint(name)
            return float(values[name])
        case ast.Call(func=ast.Name(id="FILL"), args=[series, default]):
            try:
                return _value(series, values)
            except NoDataPoint:
                return _value(default, values)
        case ast.Call(func=ast.Name(id="IF"), args=[condition, then, otherwise]):
            return _value(then, values) if _value(condition, values) else _value(otherwise, values)
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _ARITHMETIC:
            return _ARITHMETIC[type(op)](_value(left, values), _value(right, values))
        case ast.Compare(left=left, ops=[op], comparators=[right]) if type(op) in _COMPARISONS:
            return float(_COMPARISONS[type(op)](_value(left, values), _value(right, values)))
    raise ValueError(f"metric math this evaluator does not know: {ast.unparse(node)}")
