"""sympy expressions as SBML Level 3 infix formulas (libsbml's ``parseL3Formula`` syntax).

Only constructs every SBML simulator reads: ``max``/``min`` become ``piecewise``, natural logs are
written ``ln`` (L3 infix ``log`` can mean log10), powers ``pow(a, b)``, and numbers round-trip
exactly (``repr`` of the double).
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.str import StrPrinter


class SBMLPrinter(StrPrinter):
    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Rational(self, expr):
        return f"({expr.p} / {expr.q})"

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.as_base_exp()
        if exponent == -1:
            return f"(1 / {self._print(base)})"
        return f"pow({self._print(base)}, {self._print(exponent)})"

    def _print_Mul(self, expr):
        return "(" + " * ".join(self._print(a) for a in expr.args) + ")"

    def _print_Add(self, expr, order=None):
        return "(" + " + ".join(self._print(a) for a in expr.args) + ")"

    def _print_exp(self, expr):
        return f"exp({self._print(expr.args[0])})"

    def _print_Exp1(self, expr):
        return "exponentiale"

    def _print_Pi(self, expr):
        return "pi"

    def _print_log(self, expr):
        return f"ln({self._print(expr.args[0])})"

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_sign(self, expr):
        x = self._print(expr.args[0])
        return f"piecewise(1, {x} > 0, -1, {x} < 0, 0)"

    def _minmax(self, args, op):
        first, *rest = args
        if not rest:
            return self._print(first)
        a, b = self._print(first), self._minmax(rest, op)
        return f"piecewise({a}, {a} {op} {b}, {b})"

    def _print_Max(self, expr):
        return self._minmax(list(expr.args), ">=")

    def _print_Min(self, expr):
        return self._minmax(list(expr.args), "<=")

    def _print_Piecewise(self, expr):
        parts = []
        for value, condition in expr.args:
            if condition is sp.true:
                parts.append(self._print(value))
                break
            parts += [self._print(value), self._print(condition)]
        return "piecewise(" + ", ".join(parts) + ")"

    def _print_Relational(self, expr):
        op = {"==": "==", "!=": "!=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}[expr.rel_op]
        return f"({self._print(expr.lhs)} {op} {self._print(expr.rhs)})"

    def _print_And(self, expr):
        return "(" + " && ".join(self._print(a) for a in expr.args) + ")"

    def _print_Or(self, expr):
        return "(" + " || ".join(self._print(a) for a in expr.args) + ")"

    def _print_Not(self, expr):
        return f"!({self._print(expr.args[0])})"

    def _print_BooleanTrue(self, expr):
        return "true"

    def _print_BooleanFalse(self, expr):
        return "false"

    def _print_tanh(self, expr):
        return f"tanh({self._print(expr.args[0])})"


_PRINTER = SBMLPrinter()


def to_infix(expr: sp.Basic) -> str:
    """An SBML L3 infix formula for ``expr``."""
    return _PRINTER.doprint(sp.sympify(expr))
