"""Thermodynamic consistency: S = -dF/dT along isochores and P = -dF/dv along isotherms.

The evaluated free energy F per particle (Ha) at several temperatures of one isochore (same
system, N, polarization, coupling, rs and twists) gives -dF/dT (k_B per particle) by
finite differences, to compare with the evaluated entropy S; at several volumes v per particle
(bohr^dim) of one isotherm (the same, with rs free and the temperature in Ha fixed) it gives
-dF/dv (Ha/bohr^dim), to compare with the virial pressure P (for F per particle,
P = -d(N f)/d(N v) = -df/dv).

Finite differences: at every node the derivative of the Lagrange polynomial through three
neighbouring nodes (the node and its two neighbours; the three end nodes at either end), on any
(non-uniform) grid: exact for F quadratic in the variable, error O(h^2) otherwise
(h^2 F'''/6 on a uniform grid). With only two nodes, the difference quotient (first order) at both.
Errors are propagated linearly, err^2 = sum_i w_i^2 err_i^2, the runs being independent.
"""

from __future__ import annotations

import math

from freeenergy.results.table import has_numbers

# a line (isochore, isotherm) is made of points equal in these options and in their twists; the
# cutoff is a numerical setting, free along a line (at fixed quantum numbers it scales as rs^-2)
ISOCHORE_OPTIONS = ("system", "dim", "n", "paramagnetic", "coupling", "rs")
ISOTHERM_OPTIONS = ("system", "dim", "n", "paramagnetic", "coupling")


def lagrange_derivative_weights(nodes, x: float) -> list[float]:
    """Weights w_k with sum_k w_k f(nodes[k]) = p'(x), p the polynomial interpolating f at the
    (distinct) nodes."""
    weights = []
    for k, xk in enumerate(nodes):
        denom = math.prod(xk - xm for m, xm in enumerate(nodes) if m != k)
        total = 0.0
        for l_, _ in enumerate(nodes):
            if l_ == k:
                continue
            total += math.prod(x - xm for m, xm in enumerate(nodes) if m not in (k, l_))
        weights.append(total / denom)
    return weights


def derivative(xs, ys, errs=None) -> list[tuple]:
    """dy/dx at every node of (xs, ys), xs strictly increasing: [(value, error, nodes used)],
    by the three-point rule of the module docstring (two points: the difference quotient).
    ``errs`` (None entries allowed) gives the propagated error; None where unknown."""
    n = len(xs)
    if n < 2:
        return [(None, None, 0)] * n
    if any(b <= a for a, b in zip(xs, xs[1:])):
        raise ValueError(f"nodes must be strictly increasing, got {list(xs)}")
    out = []
    for i in range(n):
        start = min(max(i - 1, 0), n - 3)
        idx = [0, 1] if n == 2 else [start, start + 1, start + 2]
        w = lagrange_derivative_weights([xs[j] for j in idx], xs[i])
        value = sum(wk * ys[j] for wk, j in zip(w, idx))
        if errs is None or any(errs[j] is None for j in idx):
            err = None
        else:
            err = math.sqrt(sum((wk * errs[j]) ** 2 for wk, j in zip(w, idx)))
        out.append((value, err, len(idx)))
    return out


def _family(row: dict, options: tuple) -> tuple:
    key = dict(row["_key"])
    return (tuple(key.get(o) for o in options),
            tuple(tuple(t) for t in row["twists"]))


def add_consistency_columns(rows: list[dict]) -> list[dict]:
    """Adds S_fd, S_fd_err (= -dF/dT along the row's isochore) and P_fd, P_fd_err (= -dF/dv
    along its isotherm, same temperature in Ha to 1e-9 relative) to every evaluated row with at
    least one more evaluated point on that line (None otherwise); returns the rows."""
    for row in rows:
        row.update(S_fd=None, S_fd_err=None, P_fd=None, P_fd_err=None)
    done = [r for r in rows if has_numbers(r)]
    lines: dict = {}
    for r in done:
        lines.setdefault(("T", _family(r, ISOCHORE_OPTIONS)), []).append(r)
        t_key = float(f"{r['T_Ha']:.9e}")
        lines.setdefault(("v", _family(r, ISOTHERM_OPTIONS), t_key), []).append(r)
    for key, members in lines.items():
        var, column = ("T_Ha", "S_fd") if key[0] == "T" else ("v", "P_fd")
        members = sorted(members, key=lambda r: r[var])
        xs = [r[var] for r in members]
        if len(members) < 2 or len(set(xs)) < len(xs):
            continue
        for r, (d, err, _) in zip(members, derivative(xs, [r["F"] for r in members],
                                                      [r["F_err"] for r in members])):
            r[column], r[column + "_err"] = -d, err
    return rows
