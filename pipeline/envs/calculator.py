"""The calculator tool: arithmetic on numbers, evaluated by walking Python's `ast`, never `eval`.

    from pipeline.envs.calculator import calculate
    GRPOTrainer(..., tools=[calculate])

Only number literals, + - * / // % **, unary + and -, and parentheses are accepted; names, calls, attributes,
subscripts and strings are refused with a message the model reads. Powers and results are bounded before they are
computed (``9**9**9`` is refused at once instead of running for hours), so one call stays fast and small.
"""

from __future__ import annotations

import ast
import math
import operator

MAX_EXPRESSION_CHARS = 1_000
# |exponent| and the size of a power's result are checked before computing it: b**e has ~e*log10(b) digits
MAX_EXPONENT = 10_000
MAX_DIGITS = 4_300  # Python's own int->str limit: a longer integer could not even be printed back

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class CalculatorError(ValueError):
    """An expression the calculator refuses; the message is written for the model."""


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression and return the result.

    Supports numbers, + - * / // % ** (power), unary minus and parentheses, e.g. "(12 + 3) * 4 ** 2".

    Args:
        expression: The arithmetic expression to evaluate, using only numbers, operators and parentheses.

    Returns:
        The result as text, or a message starting with "Error:" that says what is wrong with the expression.
    """
    try:
        return _format(evaluate(expression))
    except CalculatorError as e:
        return f"Error: {e}"


def evaluate(expression: str) -> int | float:
    """The value of ``expression``; raises CalculatorError (with the reason) on anything but bounded arithmetic."""
    if not isinstance(expression, str):
        raise CalculatorError(f"the expression must be text, got {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"the expression is {len(expression)} characters long; at most "
                              f"{MAX_EXPRESSION_CHARS} are accepted")
    text = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    if not text:
        raise CalculatorError("the expression is empty")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalculatorError(f"{expression!r} is not an arithmetic expression") from None
    try:
        return _eval(tree.body)
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError("the result is too large for a floating-point number") from None
    except RecursionError:
        raise CalculatorError("the expression is nested too deeply") from None


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _finite(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        result = _BINARY[type(node.op)](left, right)
        if isinstance(result, complex):  # (-8) ** (1/3)
            raise CalculatorError("the result is not a real number (a fractional power of a negative number)")
        if isinstance(result, int) and _digits(result) > MAX_DIGITS:
            raise CalculatorError(f"the result has more than {MAX_DIGITS} digits")
        return _finite(result)
    if isinstance(node, ast.BinOp):
        raise CalculatorError(f"the operator {type(node.op).__name__} is not supported; use + - * / // % **")
    raise CalculatorError(f"{_describe(node)} is not allowed; only numbers, + - * / // % ** and parentheses are")


def _check_power(base: int | float, exponent: int | float) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"the exponent {exponent:g} is too large (at most {MAX_EXPONENT})")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent * math.log10(abs(base)) > MAX_DIGITS:
            raise CalculatorError(f"the result of a power would have more than {MAX_DIGITS} digits")


def _finite(value: int | float) -> int | float:
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("the result is too large for a floating-point number")
    return value


def _digits(value: int) -> int:
    # bit_length avoids building the decimal string just to measure it
    return int(abs(value).bit_length() * 0.30103) + 1


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Call):
        return "a function call"
    if isinstance(node, ast.Attribute):
        return f"the attribute .{node.attr}"
    if isinstance(node, ast.Constant):
        return f"the literal {node.value!r}"
    return f"a {type(node).__name__} expression"


def _format(value: int | float) -> str:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return repr(value)
    return str(value)
