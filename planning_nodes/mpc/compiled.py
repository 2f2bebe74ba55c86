"""A DPP cvxpy problem's parameter -> QP-data map, applied without cvxpy's per-solve overhead.

cvxpy canonicalizes a DPP problem once into sparse tensors that map the stacked parameter vector
to the solver's data (P, q, A, bounds) in a fixed sparsity pattern. ``problem.solve`` re-validates
every parameter, re-applies the tensors through several reductions and unpacks every variable:
about 5 ms of Python per call at N = 30, several times the solver's own time. ``CompiledQP`` keeps
the same tensors (so the problem is still canonicalized exactly once, by cvxpy) and per solve does
one sparse product per data block, an in-place OSQP update and a warm start.

The data matches ``problem.get_problem_data(cp.OSQP)`` exactly; tests/test_mpc_problem.py checks it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import clarabel
import cvxpy as cp
import numpy as np
import osqp
import scipy.sparse as sp
from cvxpy import settings as cps
from cvxpy.lin_ops import lin_op

OSQP_SOLVED = ("solved", "solved inaccurate")
NO_TIME_LIMIT_S = 1e10  # OSQP's own default: no limit
OSQP_STOPPED = ("maximum iterations reached", "run time limit reached")


@dataclass
class QPResult:
    status: str
    ok: bool
    x: np.ndarray
    objective: float
    iterations: int
    solve_ms: float


class CompiledQP:
    """``min ½xᵀPx + qᵀx + d  s.t.  l ≤ Ax ≤ u`` with (P, q, d, A, l, u) affine in the parameters."""

    def __init__(self, problem: cp.Problem) -> None:
        if not problem.is_dpp():
            raise ValueError("problem is not DPP: every solve would re-canonicalize it")
        data, _, _ = problem.get_problem_data(cp.OSQP)
        prog = data[cps.PARAM_PROB]
        self.n = prog.x.size
        self.n_eq = prog.cone_dims.zero
        self._param_cols = {pid: col for pid, col in prog.param_id_to_col.items() if pid != lin_op.CONSTANT_ID}
        self._param_vec = np.zeros(prog.total_param_size + 1)
        self._param_vec[prog.param_id_to_col[lin_op.CONSTANT_ID]] = 1.0
        self._var_cols = dict(prog.var_id_to_col)
        self._q_map = sp.csr_array(prog.q)
        prog.reduced_A.cache()
        prog.reduced_P.cache()
        self._a_map, self._a_split, self._a_pattern, self._b_rows, self.m = _split_offset(prog.reduced_A, self.n)
        self._p_map, self._p_pattern = _upper_triangle(prog.reduced_P, self.n)
        self._osqp: osqp.OSQP | None = None
        self._osqp_settings: dict = {}
        self._warm_x: np.ndarray | None = None
        self._warm_y: np.ndarray | None = None

    # -- data ------------------------------------------------------------------------------------

    def set_parameters(self, values: dict[cp.Parameter, np.ndarray]) -> None:
        """Write parameter values (no validation: callers pass finite arrays of the right shape)."""
        vec = self._param_vec
        for param, value in values.items():
            col = self._param_cols[param.id]
            flat = np.asarray(value, dtype=np.float64).reshape(-1, order="F")
            vec[col : col + flat.size] = flat

    def data(self) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, np.ndarray, np.ndarray]:
        """(P upper-triangle data, q, d, A data, l, u) at the current parameters."""
        theta = self._param_vec
        q_full = self._q_map @ theta
        p_data = self._p_map @ theta
        a_all = self._a_map @ theta
        a_data = a_all[: self._a_split]
        offset = np.zeros(self.m)
        offset[self._b_rows] = a_all[self._a_split :]
        lower = -offset
        upper = np.full(self.m, np.inf)
        upper[: self.n_eq] = lower[: self.n_eq]
        return p_data, q_full[: self.n], float(q_full[self.n]), a_data, lower, upper

    def matrices(self) -> tuple[sp.csc_array, np.ndarray, float, sp.csc_array, np.ndarray, np.ndarray]:
        p_data, q, d, a_data, lower, upper = self.data()
        P = sp.csc_array((p_data, *self._p_pattern), shape=(self.n, self.n))
        A = sp.csc_array((a_data, *self._a_pattern), shape=(self.m, self.n))
        return P, q, d, A, lower, upper

    def variable(self, x: np.ndarray, var: cp.Variable) -> np.ndarray:
        col = self._var_cols[var.id]
        return x[col : col + var.size].reshape(var.shape, order="F")

    def pack(self, values: dict[cp.Variable, np.ndarray]) -> np.ndarray:
        """A primal vector from variable values (for warm starts); missing variables are zero."""
        x = np.zeros(self.n)
        for var, value in values.items():
            col = self._var_cols[var.id]
            x[col : col + var.size] = np.asarray(value, dtype=np.float64).reshape(-1, order="F")
        return x

    # -- solvers ---------------------------------------------------------------------------------

    def solve_osqp(self, settings: dict, warm_x: np.ndarray | None = None, accept_residual: float = 0.0) -> QPResult:
        """Warm-started OSQP on the persistent workspace (set up on the first call).

        An iterate stopped by the iteration or time limit is accepted (status ``approximate: ...``)
        when its largest constraint violation is at most ``accept_residual`` (real-time iteration).
        """
        p_data, q, d, a_data, lower, upper = self.data()
        start = time.perf_counter()
        fixed = {k: v for k, v in settings.items() if k != "time_limit"}  # updatable without a new setup
        if self._osqp is None or fixed != self._osqp_settings:
            P = sp.csc_matrix((p_data, *self._p_pattern), shape=(self.n, self.n))
            A = sp.csc_matrix((a_data, *self._a_pattern), shape=(self.m, self.n))
            self._osqp = osqp.OSQP()
            self._osqp.setup(P=P, q=q, A=A, l=lower, u=upper, verbose=False, **settings)
            self._osqp_settings = fixed
        else:
            self._osqp.update(q=q, l=lower, u=upper, Px=p_data, Ax=a_data)
            self._osqp.update_settings(time_limit=settings.get("time_limit", NO_TIME_LIMIT_S))
        if warm_x is not None:
            self._osqp.warm_start(x=warm_x, y=self._warm_y)
        elif self._warm_x is not None:
            self._osqp.warm_start(x=self._warm_x, y=self._warm_y)
        result = self._osqp.solve(raise_error=False)
        solve_ms = (time.perf_counter() - start) * 1e3
        status = str(result.info.status)
        finite = bool(np.all(np.isfinite(result.x)))
        ok = status in OSQP_SOLVED and finite
        if not ok and finite and status in OSQP_STOPPED and result.info.prim_res <= accept_residual:
            ok, status = True, f"approximate: {status}"
        if ok:
            self._warm_x, self._warm_y = np.array(result.x), np.array(result.y)
        objective = float(result.info.obj_val) + d if ok else math.inf
        return QPResult(status, ok, np.array(result.x), objective, int(result.info.iter), solve_ms)

    def solve_clarabel(self, settings: dict) -> QPResult:
        """Clarabel (interior point, no warm start) on the same data."""
        P, q, d, A, lower, _ = self.matrices()
        start = time.perf_counter()
        eq = self.n_eq
        # l ≤ Ax ≤ u with u = l on the first rows, u = inf below: Ax + s = l (s = 0), -Ax + s = -l (s ≥ 0)
        Ac = sp.vstack([A[:eq], -A[eq:]]).tocsc()
        bc = np.concatenate([lower[:eq], -lower[eq:]])
        cones = [clarabel.ZeroConeT(eq), clarabel.NonnegativeConeT(self.m - eq)]
        options = clarabel.DefaultSettings()
        options.verbose = False
        for key, value in settings.items():
            setattr(options, key, value)
        solver = clarabel.DefaultSolver(sp.triu(P, format="csc"), q, Ac, bc, cones, options)
        result = solver.solve()
        solve_ms = (time.perf_counter() - start) * 1e3
        status = str(result.status)
        ok = status in ("Solved", "AlmostSolved") and bool(np.all(np.isfinite(result.x)))
        objective = float(result.obj_val) + d if ok else math.inf
        return QPResult(status, ok, np.array(result.x), objective, int(result.iterations), solve_ms)

    def reset_warm_start(self) -> None:
        self._warm_x = self._warm_y = None


def _split_offset(reduced, n: int):
    """Split cvxpy's [A | b] map into the A data map (fixed CSC pattern) and the offset rows."""
    indices, indptr, shape = reduced.problem_data_index
    split = int(indptr[n])
    pattern = (np.asarray(indices[:split], dtype=np.int32), np.asarray(indptr[: n + 1], dtype=np.int32))
    b_rows = np.asarray(indices[split:])
    return sp.csr_array(reduced.reduced_mat), split, pattern, b_rows, int(shape[0])


def _upper_triangle(reduced, n: int):
    """The map to P's upper-triangle CSC data (what OSQP and Clarabel take)."""
    indices, indptr, _ = reduced.problem_data_index
    cols = np.repeat(np.arange(n), np.diff(indptr))
    keep = np.asarray(indices) <= cols
    new_indptr = np.concatenate([[0], np.cumsum(np.bincount(cols[keep], minlength=n))])
    pattern = (np.asarray(indices)[keep].astype(np.int32), new_indptr.astype(np.int32))
    return sp.csr_array(reduced.reduced_mat)[np.flatnonzero(keep)], pattern
