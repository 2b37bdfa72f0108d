"""Typed run configuration, validated before any expensive work.

Every field is documented here, where its default is set. A config is resolved once (defaults,
then a config file, then command-line flags), validated, and saved as ``config.json`` in the run
directory; nothing downstream parses hyperparameters from anywhere else.
Units: lengths in bohr, energies in Hartree, temperatures as Theta = k_B T / E_F.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from typing import Any, Optional

SYSTEMS = ("ueg", "ocp", "hydrogen")
LAPLACIANS = ("analytic", "folx", "loop")
EP_BACKFLOWS = ("bounded-axes", "bounded", "free")  # hydrogen: kinds of the √flow's electron-proton term
OPTIMIZERS = ("sr", "adam")
PROTON_GRADIENTS = ("total", "path", "score")  # ocp: estimators of the flow's gradient (build_ocp)
# ocp with --optimizer sr: the default step, and the default Fisher-norm bound per proton (the KL
# divergence it bounds is extensive; measured at 3D N=8 and 54, Gamma=10: README, proton flow)
OCP_SR_LR = 1.0
OCP_SR_MAX_NORM_PER_PROTON = 0.2
SR_SOLVERS = ("direct", "cg")
SAMPLINGS = ("joint", "redraw")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the option."""


@dataclasses.dataclass
class Config:
    # --- physical system ---
    # "ueg": uniform electron gas (no protons); "ocp": classical one-component plasma (protons
    # only); "hydrogen": classical protons + quantum electrons
    system: str = "ueg"
    dim: Optional[int] = None      # spatial dimension, 2 or 3; None: 3 for hydrogen, else 2
    n: int = 13                    # total number of electrons
    rs: float = 1.0                # Wigner-Seitz radius (bohr)
    # k_B T / E_F, E_F of the infinite gas at the same density and polarization (ueg)
    theta: float = 0.15
    gamma: Optional[float] = None  # ocp: coupling Gamma = e^2/(rs k_B T) (give it or temperature_K)
    # ocp: temperature (K) (give it or gamma); hydrogen: the temperature (required)
    temperature_K: Optional[float] = None
    paramagnetic: bool = False     # two spin species with n/2 electrons each (else fully polarized)
    coupling: float = 1.0          # lambda multiplying the Coulomb energy (0: ideal gas)
    twist: Optional[list] = None   # twist in units of 2 pi / L, components in [-0.5, 0.5]; None = Gamma point
    # hydrogen: a K x K x K Monkhorst-Pack grid of twists, the same protons for every twist; 1: the
    # single --twist
    twists: int = 1
    cutoff: Optional[float] = None  # single-particle energy cutoff (Ha); None: chosen from n and theta
    cutoff_tail: float = 1e-5      # default cutoff leaves at most this many ideal-gas particles outside
    ewald_accuracy: float = 1e-10  # target accuracy of the Ewald sum (Ha)
    # --- models ---
    backflow: bool = True          # use the √flow backflow (False: bare plane waves)
    backflow_hidden: list = dataclasses.field(default_factory=lambda: [32, 32])
    # hydrogen: the √flow's electron-proton term, "bounded-axes" or "bounded" (a potential's
    # gradient that never folds the map, with or without per-axis modes) or "free" (a pair MLP
    # summed over protons)
    ep_backflow: str = "bounded-axes"
    # VAN (MADE) hidden widths; None: two layers of min(D-1, max(64, round(4 sqrt D))), D =
    # occupation positions
    van_hidden: Optional[list] = None
    # ocp and hydrogen: layers of the proton flow (each moves one Cartesian axis; axes in turn)
    proton_flow_layers: int = 24
    proton_flow_hidden: int = 32   # ocp and hydrogen: width of the proton flow's equivariant conditioner
    proton_flow_bins: int = 8      # ocp and hydrogen: bins of each circular rational-quadratic spline
    # ocp: samples per vectorized chunk of the flow's forward/backward pass (bounds memory); 0: all
    # of a device's samples at once
    proton_flow_chunk: int = 0
    # ocp and hydrogen: spline couplings in the proton flow (off: pair-shift layers only, exactly
    # translation-invariant)
    proton_flow_splines: bool = False
    # ocp and hydrogen: pair shifts bounded only on the compressive side (expansions up to 1 + 0.95
    # K per layer)
    proton_flow_expanding: bool = True
    proton_flow_pair_shift: bool = True  # ocp and hydrogen: a pair-shift layer after every spline coupling
    # ocp and hydrogen: Fourier harmonics K of each pair shift's potential along its axis (shortest
    # wavelength L/K); 0: from the box, K = max(3, round(L/rs))
    proton_flow_harmonics: int = 0
    # ocp and hydrogen: harmonics m of the separations across the axis a pair shift's weights see;
    # 0: from the box, m = max(2, round(L/(1.6 rs)))
    proton_flow_features: int = 0
    # ocp and hydrogen: pair-shift networks that also see each proton's mean pair state
    proton_flow_context: bool = True
    # ocp: "total", "path" or "score" gradient of the bound (build_ocp); None: "total" (adam),
    # "score" (sr)
    proton_gradient: Optional[str] = None
    # ocp: maximum-likelihood steps of the flow on Metropolis configurations before the bound
    proton_pretrain_steps: int = 0
    proton_pretrain_chains: int = 16      # ocp: Metropolis chains for the pretraining data
    proton_pretrain_configs: int = 200    # ocp: configurations kept per chain (every 10 sweeps)
    proton_pretrain_lr: float = 3e-3      # ocp: Adam step of the pretraining, decayed over 200 steps
    # --- sampling ---
    # "joint": exact chain for p(n)|psi_n(x)|^2 (VAN draw accepted by the |psi|^2 ratio); "redraw":
    # legacy, biased
    sampling: str = "joint"
    mc_steps: int = 50             # all-electron Metropolis moves per training step
    mc_thermalize: int = 200       # Metropolis moves before the first step
    # initial move width (bohr); 0: 0.3 rs (then adapted to the target acceptance)
    mc_width: float = 0.0
    mc_target_acceptance: float = 0.5
    # "analytic" (pair-structure, fastest), "folx" (forward Laplacian), "loop" (reference)
    laplacian: str = "analytic"
    eloc_chunk: int = 32           # walkers per vectorized chunk of the local-energy evaluation
    # --- optimization ---
    steps: int = 100               # training steps
    batch: int = 256               # walkers (and VAN samples) per step
    # "sr" (stochastic reconfiguration) or "adam"; None: sr (ueg, hydrogen), adam (ocp)
    optimizer: Optional[str] = None
    # learning rate (SR: natural-gradient step; Adam: step size); None: 0.05 (sr; ocp: 1.0),
    # 1e-3 (adam)
    lr: Optional[float] = None
    lr_van: Optional[float] = None   # learning rate of the VAN group; None: lr
    lr_flow: Optional[float] = None  # learning rate of the flow group; None: lr
    lr_protons: Optional[float] = None  # hydrogen: learning rate of the proton-flow group; None: lr
    lr_decay_steps: float = 0.0    # lr / (1 + step / lr_decay_steps); 0: constant
    sr_damping: float = 1e-3       # diagonal shift of the Fisher matrices
    # bound on the Fisher norm of each SR update (trust region); None: 1e-3 (ocp: 0.2 N)
    sr_max_norm: Optional[float] = None
    sr_max_norm_van: Optional[float] = None   # the bound for the VAN group; None: sr_max_norm
    sr_max_norm_flow: Optional[float] = None  # the bound for the flow group; None: sr_max_norm
    # hydrogen: the bound for the proton-flow group; None: sr_max_norm
    sr_max_norm_protons: Optional[float] = None
    # "direct" (every shard gathers all score rows; exact solve) or "cg" (rows stay on their shard;
    # conjugate gradient)
    sr_solver: str = "direct"
    sr_cg_iters: int = 100         # most CG iterations per SR solve (--sr-solver cg)
    sr_cg_tol: float = 1e-6        # CG stops when |residual| < this * |gradient| (--sr-solver cg)
    # clip E_loc in the GRADIENTS to mean +- this many mean absolute deviations; 0: off (estimates
    # are never clipped)
    clip_eloc: float = 5.0
    # stop (exit 1, no checkpoint of the bad state) when more walkers than this have det dz/dx <= 0
    max_folded_fraction: float = 0.05
    # a step whose F rises this many sigma above its recent history (or any non-finite step) rewinds
    # to the last checkpoint; 0: off
    divergence_sigma: float = 30.0
    max_rewinds: int = 3           # rewinds allowed before the run stops with exit 1
    rewind_lr_factor: float = 0.5  # every update is multiplied by this factor once more after each rewind
    # --- run control ---
    seed: int = 42
    out: str = "runs/default"
    # steps between checkpoints (also written at the end and on SIGTERM/SIGUSR1)
    checkpoint_every: int = 50
    average_fraction: float = 0.5  # final fraction of the steps used for the summary estimates
    progress_every: int = 1        # steps between progress lines
    # after training, evaluate the frozen parameters for this many steps (eval.json); 0: no
    # evaluation
    eval_steps: int = 0
    # a step slower than this many times the median step ends the run (exit 75: requeue resumes)
    watchdog_factor: float = 20.0
    watchdog_min_s: float = 300.0  # ... but never before this many seconds (s)
    watchdog_first_s: float = 3600.0  # limit (s) for the first step (compilation) and for set-up

    def per_group(self, value: float, van: Optional[float], flow: Optional[float],
                  protons: Optional[float] = None) -> dict:
        """{"van": ..., "flow": ...} (and "protons" for hydrogen) with the group's own value
        where given, else ``value``."""
        groups = {"van": value if van is None else van, "flow": value if flow is None else flow}
        if self.system == "hydrogen":
            groups["protons"] = value if protons is None else protons
        return groups

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}

# One line of ``--help`` per field: meaning, unit and allowed values (the default is appended by
# the CLI). tests/test_help.py checks that every field has one.
HELP: dict[str, str] = {
    # --- physical system ---
    "system": 'physical system: "ueg", the uniform electron gas in a neutralizing background; '
              '"ocp", the classical one-component plasma (point protons in a rigid neutralizing '
              "background; needs --gamma or --temperature-K); \"hydrogen\", N classical protons and "
              "N quantum electrons (paramagnetic, N/2 per spin) in 3D, the proton flow, the VAN "
              "and the √flow on one bound; needs --temperature-K)",
    "dim": "spatial dimension: 2 or 3 (default: 3 for hydrogen, 2 otherwise; hydrogen needs 3)",
    "n": "total number of particles, integer >= 1: electrons (ueg: even with --paramagnetic, at "
         "most the number of states of the basis), protons (ocp), or atoms (hydrogen: N protons "
         "and N electrons, even)",
    "rs": "Wigner-Seitz radius (bohr), > 0: the density",
    "twists": "hydrogen: twist averaging over a K x K x K Monkhorst-Pack grid of twists "
              "(components (2r - K - 1)/(2K); K = 2: +-1/4), integer >= 1; the electrons' "
              "energy and entropy of each proton configuration are averaged over the K^3 twists, "
              "each with its own occupations and walkers, the protons shared; --batch counts "
              "(protons, twist) walkers and must be a multiple of K^3 on every shard; 1: the "
              "single twist --twist",
    "theta": "reduced temperature Theta = k_B T / E_F, > 0, with E_F of the infinite gas at the "
             "same density and polarization (hydrogen: derived from --temperature-K)",
    "gamma": "ocp: coupling parameter Gamma = e^2/(rs k_B T), > 0 (give this or --temperature-K)",
    "temperature_K": "temperature in kelvin, > 0: ocp (give this or --gamma) and hydrogen "
                     "(required; Theta = k_B T / E_F is reported)",
    "proton_flow_layers": "ocp and hydrogen: layers of the proton flow, integer >= 1 (each moves "
                          "one Cartesian axis of every proton, axes in turn; with "
                          "--proton-flow-splines a layer is a spline coupling followed by a pair "
                          "shift). Depth is what the bound "
                          "rewards most (3D N=8, Gamma=10, 100 Adam steps: f_ex -7.08 with 12 "
                          "layers, -7.24 with 24, -7.27 with 48; reference -7.37)",
    "proton_flow_hidden": "ocp and hydrogen: width of the proton flow's permutation-equivariant conditioner, "
                          "integer >= 1",
    "proton_flow_bins": "ocp and hydrogen: bins of each circular rational-quadratic spline, integer >= 2",
    "proton_flow_chunk": "ocp: samples per vectorized chunk of the proton flow's forward and "
                         "backward pass, integer >= 0 (the largest divisor of the samples per "
                         "device not above it is used); bounds memory at large N and batch "
                         "without changing the numbers beyond round-off; 0: all at once",
    "proton_flow_splines": "ocp and hydrogen: put a spline coupling (a circle map of each proton along the "
                           "layer's axis, conditioned on the other axes) before every pair-shift "
                           "layer. Off by default: the pair-shift-only flow is exactly "
                           "translation-invariant, and per step of compute it reached lower "
                           "bounds on the liquid OCP (3D N=8, Gamma=10 and 50)",
    "proton_pretrain_steps": "ocp: before the first step, fit the flow by maximum likelihood "
                             "(Adam on -mean ln p, minibatches of --batch) to configurations of "
                             "exp(-U/k_B T) from plain Metropolis chains, integer >= 0; a far "
                             "better start for the bound at strong coupling (README). It runs in "
                             "the set-up, whose time limit is --watchdog-first-s (default 1 h): "
                             "raise that for a long pretraining; 0: off",
    "proton_pretrain_chains": "ocp: Metropolis chains that make the pretraining configurations "
                              "(400 sweeps to equilibrate each), integer >= 1",
    "proton_pretrain_configs": "ocp: pretraining configurations kept per chain, one every 10 "
                               "sweeps, integer >= 1",
    "proton_pretrain_lr": "ocp: Adam step size of the pretraining, decayed as lr/(1 + t/200), > 0",
    "proton_gradient": 'ocp: the estimator of the bound\'s gradient. "total" (default with '
                       "adam): differentiate U(S) + k_B T ln p(S) along each sample S = f(u) of "
                       'the flow, ln p included; "path": drop the part of that derivative that '
                       "moves ln p at a fixed S (zero on average), which vanishes sample by "
                       "sample when p is the Boltzmann density (sticking the landing; costs "
                       'one inverse pass per sample); "score" (default with sr): the score '
                       "function, mean[(f - mean f) d ln p(S)/d theta] with f = U + k_B T ln p, "
                       "in the span of the Fisher matrix's rows (one inverse pass per sample)",
    "proton_flow_expanding": "ocp and hydrogen: pair-shift layers whose Jacobian is bounded only on the "
                             "compressive side (eigenvalues in [0.05, 1 + 0.95 K], K the "
                             "--proton-flow-harmonics, instead of [0.05, 1.95]), so one layer "
                             "can open the correlation hole between close protons much "
                             "further; --no-proton-flow-expanding: the symmetric "
                             "bound. 3D N=8, Gamma=10: the bound after 100 steps equals that of "
                             "400 steps with the symmetric bound",
    "proton_flow_harmonics": "ocp and hydrogen: Fourier harmonics K of each pair-shift layer's pair "
                             "potential along its axis, integer >= 1: its shortest wavelength is "
                             "L/K, and an expanding layer's Jacobian eigenvalues reach 1 + 0.95 K; "
                             "0 (default): from the box, K = max(3, round(L/rs)) (shortest "
                             "wavelength about one ion-sphere radius at every N: 3 at N=8, 4 at "
                             "N=16, 6 at N=54 in 3D)",
    "proton_flow_features": "ocp and hydrogen: harmonics m of the separations across a pair-shift "
                            "layer's axis that its pair weights see, integer >= 1; 0 (default): "
                            "from the box, m = max(2, round(L/(1.6 rs))) (2 at N=8, 3 at N=16, "
                            "4 at N=54 in 3D)",
    "proton_flow_context": "ocp and hydrogen: the pair network of every pair-shift layer also "
                           "sees each proton's mean pair state over all others (many-body "
                           "context, still only from the separations across the layer's "
                           "axis, so the exact Jacobian keeps its form)",
    "proton_flow_pair_shift": "ocp and hydrogen: pair-shift layers (protons pushed apart along "
                              "the layer's axis by their neighbours; exact bijection); "
                              "--no-proton-flow-pair-shift with --proton-flow-splines: spline couplings only",
    "paramagnetic": "two spin species with n/2 electrons each; --no-paramagnetic: fully "
                    "spin-polarized",
    "coupling": "lambda multiplying the Coulomb energy, >= 0 (0: the ideal gas, exact; 1: the "
                "physical gas)",
    "twist": "twist of the boundary conditions in units of 2 pi/L, one number per dimension, each "
             "in [-0.5, 0.5]; unset: 0 (Gamma point)",
    "cutoff": "single-particle energy cutoff (Ha), > 0: the basis is every plane wave with "
              "|k|^2/2 <= cutoff; unset: the smallest shell leaving fewer than --cutoff-tail "
              "ideal-gas electrons above it",
    "cutoff_tail": "with the default cutoff: expected number of ideal-gas electrons left above "
                   "it, > 0",
    "ewald_accuracy": "target accuracy of the Ewald sum (Ha), in (0, 1e-3)",
    # --- models ---
    "backflow": "use the sqrt-flow pair backflow z(x); --no-backflow: bare plane waves (z = x)",
    "backflow_hidden": "hidden-layer widths of the backflow's pair networks, positive integers, "
                       "one per layer",
    "ep_backflow": 'hydrogen: the electron-proton term of the sqrt-flow: "bounded-axes" (default), '
                   "the gradient of a soft maximum over protons of periodic potentials (radial "
                   "plus per-axis modes) whose Hessian is bounded below, so that term alone never "
                   'folds the map (I + its Jacobian >= 0.05 I for any protons); "bounded", the '
                   "same without the per-axis modes (runs written before bounded-axes); "
                   '"free", a pair MLP summed over '
                   "protons (runs written before either), which folded the map where the "
                   "compressive tails of several protons overlap",
    "van_hidden": "hidden-layer widths of the VAN (MADE), positive integers, one per layer; unset: "
                  "two layers of min(D-1, max(64, round(4 sqrt D))), D = occupation positions "
                  "(both spins)",
    # --- sampling ---
    "sampling": 'chain for (n, x): "joint", exact for p(n)|psi_n(x)|^2 (a VAN draw accepted by '
                'the |psi|^2 ratio), or "redraw", legacy and biased (to measure that bias)',
    "mc_steps": "all-electron Metropolis moves of x per training step, integer >= 1",
    "mc_thermalize": "Metropolis moves before the first step, integer >= 0",
    "mc_width": "initial Metropolis move width (bohr), >= 0; 0: 0.3 rs. It then adapts to "
                "--mc-target-acceptance",
    "mc_target_acceptance": "acceptance of the x moves that the move width adapts to, in (0, 1)",
    "laplacian": 'kinetic-energy Laplacian, all exact: "analytic" (pair structure, fastest), '
                 '"folx" (forward Laplacian) or "loop" (Hessian-vector reference)',
    "eloc_chunk": "walkers per vectorized chunk of the local-energy evaluation, integer >= 1 "
                  "(memory against speed)",
    # --- optimization ---
    "steps": "total number of training steps, integer >= 1; with --resume too (the run continues "
             "up to this step, it does not add this many)",
    "batch": "walkers (and VAN samples) per step, integer >= 2; over MPI ranks and devices the "
             "global number, divisible by ranks x devices",
    "optimizer": '"sr" (stochastic reconfiguration: natural gradient) or "adam"; unset: sr for '
                 "ueg and hydrogen, adam for ocp (ocp with sr: the classical Fisher matrix of "
                 "the proton flow, its score rows through the flow's inverse)",
    "lr": "learning rate, > 0 (SR: natural-gradient step; Adam: step size); unset: 0.05 for sr "
          f"({OCP_SR_LR:g} for ocp), 1e-3 for adam",
    "lr_van": "learning rate of the VAN parameters, > 0; unset: --lr",
    "lr_flow": "learning rate of the flow parameters, > 0; unset: --lr",
    "lr_protons": "hydrogen: learning rate of the proton-flow parameters, > 0; unset: --lr",
    "lr_decay_steps": "learning-rate decay lr / (1 + step / this) (steps), >= 0; 0: constant",
    "sr_damping": "diagonal shift of the SR Fisher matrices, > 0",
    "sr_max_norm": "trust region: bound on the Fisher norm of each SR update, > 0; unset: 1e-3 "
                   f"(ocp: {OCP_SR_MAX_NORM_PER_PROTON} N, N the protons)",
    "sr_max_norm_van": "the --sr-max-norm bound for the VAN parameters, > 0; unset: --sr-max-norm",
    "sr_max_norm_flow": "the --sr-max-norm bound for the flow parameters, > 0; unset: --sr-max-norm",
    "sr_max_norm_protons": "hydrogen: the --sr-max-norm bound for the proton-flow parameters, "
                           "> 0; unset: --sr-max-norm",
    "sr_solver": '"direct" (every device gathers the score rows of all walkers and solves exactly, '
                 'in parameter space when a group has fewer parameters than score rows, else in '
                 'sample space) or "cg" (score rows stay on their device; conjugate gradient on '
                 "Fisher-vector products, one allreduce per iteration: per-device memory falls "
                 "as ranks/devices are added)",
    "sr_cg_iters": "most conjugate-gradient iterations per SR solve (--sr-solver cg), integer >= 1",
    "sr_cg_tol": "CG stops when the residual is below this fraction of the gradient's norm "
                 "(--sr-solver cg), > 0",
    "clip_eloc": "clip the local energies entering the gradients to mean +- this many mean absolute "
                 "deviations, >= 0; 0: off (reported estimates are never clipped)",
    "max_folded_fraction": "the run stops (exit 1, no checkpoint of that state) when more than "
                           "this fraction of the walkers has det dz/dx <= 0 (a folded flow), in "
                           "[0, 1]",
    # --- run control ---
    "seed": "seed of every random stream, integer in [0, 2^63 - 1] (same seed, same machine: "
            "same numbers)",
    "out": "run directory, created: config.json, log.csv, checkpoints/, summary.json",
    "checkpoint_every": "steps between checkpoints, integer >= 1 (one is also written at the end "
                        "and on SIGTERM/SIGUSR1)",
    "average_fraction": "final fraction of the training steps averaged in summary.json, in (0, 1]",
    "progress_every": "steps between progress lines, integer >= 1",
    "eval_steps": "after training, evaluate the frozen parameters for this many steps "
                  "(eval.json), integer >= 0; 0: no evaluation",
    "watchdog_factor": "a step slower than this many times the median step ends the run with "
                       "exit 75 (resumable), > 0",
    "watchdog_min_s": "the watchdog never ends a step shorter than this (s), > 0",
    "watchdog_first_s": "time limit (s) of set-up and the first step (compilation), > 0",
    "divergence_sigma": "a step whose F rises more than this many standard deviations above the "
                        "recent history, or any non-finite step, rewinds to the last checkpoint "
                        "with a lower step size, >= 0; 0: no such check",
    "max_rewinds": "rewinds allowed before the run stops with exit 1, integer >= 0",
    "rewind_lr_factor": "factor multiplying every update after each rewind, in (0, 1)",
}

# Options that may differ between a run and its ``--resume`` (run control only: how long, how
# often to write, when to stop); every other option defines the run and must not change.
RESUME_MAY_CHANGE = frozenset({
    "steps", "out", "checkpoint_every", "progress_every", "average_fraction", "eval_steps",
    "eloc_chunk", "proton_flow_chunk", "watchdog_factor", "watchdog_min_s", "watchdog_first_s",
    "max_folded_fraction", "divergence_sigma", "max_rewinds", "rewind_lr_factor"})
SEED_MAX = 2 ** 63 - 1  # jax.random.PRNGKey takes a signed 64-bit integer


def from_dict(values: dict[str, Any], base: Optional[Config] = None) -> Config:
    """Overlays ``values`` on ``base`` (or the defaults); unknown keys are an error."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)}; known: {', '.join(sorted(FIELDS))}")
    cfg = dataclasses.replace(base) if base is not None else Config()
    for key, value in values.items():
        setattr(cfg, key, value)
    return cfg


def load_file(path: str) -> dict:
    """Reads a JSON or YAML config file into a dict; ConfigError naming the file (and the line,
    where the parser gives one) when it is missing, not a file, unreadable or malformed."""
    if os.path.isdir(path):
        raise ConfigError(f"--config {path} is a directory, not a config file")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc})") from None
    if path.endswith((".yaml", ".yml")):
        import yaml
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config {path}: malformed YAML: "
                              f"{' '.join(str(exc).split())}") from None
        data = {} if data is None else data
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--config {path}: malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path} must hold a mapping of option: value, "
                          f"got {type(data).__name__}")
    return data


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _type_error(name: str, expected: str, value) -> ConfigError:
    return ConfigError(f"{_flag(name)} (file key {name}) must be {expected}, "
                       f"got {value!r} ({type(value).__name__})")


def check_types(cfg: "Config") -> None:
    """Checks every value against its field's declared type, whether it came from a flag or a
    file: booleans must be true/false (not "no", not 1), integers integers (not 2.5, not true),
    numbers finite numbers, strings strings, lists lists of the right items. Raises ConfigError
    naming the first bad option."""
    hints = typing.get_type_hints(Config)
    for name in FIELDS:
        value = getattr(cfg, name)
        hint = hints[name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is typing.Union:
            if value is None:
                continue
            hint = args[0]
        if hint is bool:
            if not isinstance(value, bool):
                raise _type_error(name, "true or false", value)
        elif hint is int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise _type_error(name, "an integer", value)
        elif hint is float:
            if not _is_number(value):
                raise _type_error(name, "a finite number", value)
        elif hint is str:
            if not isinstance(value, str):
                raise _type_error(name, "a string", value)
        elif hint is list:
            if not isinstance(value, list):
                raise _type_error(name, "a list", value)
            if name == "twist":
                if not all(_is_number(t) for t in value):
                    raise _type_error(name, "a list of finite numbers, one per dimension", value)
            elif not all(isinstance(w, int) and not isinstance(w, bool) for w in value):
                raise _type_error(name, "a list of integers", value)


def _positive(cfg, name):
    value = getattr(cfg, name)
    if not _is_number(value) or value <= 0:
        raise ConfigError(f"--{name.replace('_', '-')} must be a positive number, got {value!r}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _non_negative(cfg, name):
    value = getattr(cfg, name)
    if not _is_number(value) or value < 0:
        raise ConfigError(f"--{name.replace('_', '-')} must be a number >= 0, got {value!r}")


def _positive_int(cfg, name, minimum=1):
    value = getattr(cfg, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {value!r}")


def pair_shift_resolution(n: int, dim: int) -> tuple[int, int]:
    """The default (harmonics K, features m) of the proton flow's pair-shift layers for n
    particles in dim dimensions: K = max(3, round(L/rs)) and m = max(2, round(L/(1.6 rs))), with
    L/rs = (4 pi n/3)^(1/3) (3D) or (pi n)^(1/2) (2D), so that the shortest wavelength along a
    layer's axis (L/K) stays about one ion-sphere radius and across it (L/m) about 1.6 rs at
    every N: a fixed count would resolve the correlation hole ever more coarsely as N grows
    (3D N=54, Gamma=10, 24 expanding layers, batch 64, 100 Adam steps: f_ex -7.019(5) with
    (K, m) = (6, 4) against -7.001(7) with (3, 2), Kish ESS per sample 0.028 against 0.004)."""
    ratio = (4.0 * math.pi * n / 3.0) ** (1.0 / 3.0) if dim == 3 else math.sqrt(math.pi * n)
    return max(3, int(round(ratio))), max(2, int(round(ratio / 1.6)))


def _check_proton_flow(cfg: Config) -> None:
    for name, minimum in (("proton_flow_layers", 1), ("proton_flow_hidden", 1),
                          ("proton_flow_bins", 2), ("proton_flow_harmonics", 0),
                          ("proton_flow_features", 0)):
        _positive_int(cfg, name, minimum)
    harmonics, features = pair_shift_resolution(cfg.n, cfg.dim)
    cfg.proton_flow_harmonics = cfg.proton_flow_harmonics or harmonics
    cfg.proton_flow_features = cfg.proton_flow_features or features
    if not (cfg.proton_flow_splines or cfg.proton_flow_pair_shift):
        raise ConfigError("--no-proton-flow-splines with --no-proton-flow-pair-shift leaves "
                          "the proton flow without layers; keep at least one kind")


def _check_system_options(cfg: Config) -> None:
    """Options that belong to one system only: the temperature of the OCP is --gamma or
    --temperature-K (exactly one), that of hydrogen --temperature-K, that of the electron gas
    --theta. Hydrogen is 3D and paramagnetic (N/2 electrons per spin)."""
    pretrain = ("proton_pretrain_steps", "proton_pretrain_chains", "proton_pretrain_configs")
    for name, minimum in zip(pretrain, (0, 1, 1)):
        _positive_int(cfg, name, minimum)
    _positive(cfg, "proton_pretrain_lr")
    if cfg.system != "ocp" and cfg.proton_pretrain_steps:
        raise ConfigError("--proton-pretrain-steps is an option of --system ocp (it needs "
                          "Boltzmann configurations of the protons alone)")
    if cfg.system != "ocp" and cfg.proton_gradient is not None:
        raise ConfigError("--proton-gradient is an option of --system ocp (hydrogen's proton "
                          "flow is trained with the score function)")
    if cfg.system == "hydrogen":
        if cfg.dim != 3:
            raise ConfigError(f"--system hydrogen is 3D; got --dim {cfg.dim}")
        if cfg.temperature_K is None:
            raise ConfigError("--system hydrogen needs --temperature-K (kelvin)")
        _positive(cfg, "temperature_K")
        if cfg.gamma is not None:
            raise ConfigError("--gamma is an option of --system ocp; hydrogen's temperature is "
                              "--temperature-K")
        if cfg.n % 2:
            raise ConfigError(f"--system hydrogen needs an even --n (N/2 electrons per spin), "
                              f"got n={cfg.n}")
        cfg.paramagnetic = True
        _positive(cfg, "rs")
        from freeenergy.physics.box import fermi_energy
        from freeenergy.physics.units import KB_HA_PER_K
        cfg.theta = float(cfg.temperature_K) * KB_HA_PER_K / fermi_energy(cfg.rs, 3, True)
        _check_proton_flow(cfg)
        return
    for name in ("lr_protons", "sr_max_norm_protons"):
        if getattr(cfg, name) is not None:
            raise ConfigError(f"--{name.replace('_', '-')} is an option of --system hydrogen")
    if cfg.system == "ocp":
        given = [name for name in ("gamma", "temperature_K") if getattr(cfg, name) is not None]
        if len(given) != 1:
            raise ConfigError("--system ocp needs exactly one of --gamma and --temperature-K, got "
                              f"{' and '.join('--' + g.replace('_', '-') for g in given) or 'neither'}")
        _positive(cfg, given[0])
        if cfg.paramagnetic:
            raise ConfigError("--paramagnetic has no meaning for --system ocp (classical protons)")
        _check_proton_flow(cfg)
        if cfg.proton_pretrain_steps and cfg.coupling == 0:
            raise ConfigError("--proton-pretrain-steps with --coupling 0: the flow's uniform base "
                              "is already the ideal gas's density; nothing to pretrain")
        if cfg.proton_gradient is not None and cfg.proton_gradient not in PROTON_GRADIENTS:
            raise ConfigError(f"--proton-gradient must be one of {PROTON_GRADIENTS}, got "
                              f"{cfg.proton_gradient!r}")
    else:
        for name in ("gamma", "temperature_K"):
            if getattr(cfg, name) is not None:
                raise ConfigError(f"--{name.replace('_', '-')} is an option of --system ocp and "
                                  f"hydrogen; the electron gas's temperature is --theta")


def validate(cfg: Config) -> Config:
    """Checks every option; raises ConfigError naming the first bad one. Returns cfg (twist normalized)."""
    check_types(cfg)
    if cfg.system not in SYSTEMS:
        raise ConfigError(f"--system must be one of {SYSTEMS}, got {cfg.system!r}")
    if cfg.dim is None:
        cfg.dim = 3 if cfg.system == "hydrogen" else 2
    if cfg.dim not in (2, 3):
        raise ConfigError(f"--dim must be 2 or 3, got {cfg.dim!r}")
    _positive_int(cfg, "n")
    if cfg.paramagnetic and cfg.n % 2:
        raise ConfigError(f"--paramagnetic needs an even --n (n/2 per spin), got n={cfg.n}")
    _positive(cfg, "rs")
    _positive(cfg, "theta")
    _check_system_options(cfg)
    if not isinstance(cfg.coupling, (int, float)) or not math.isfinite(cfg.coupling) or cfg.coupling < 0:
        raise ConfigError(f"--coupling must be a number >= 0, got {cfg.coupling!r}")
    if cfg.twist is None:
        cfg.twist = [0.0] * cfg.dim
    if len(cfg.twist) != cfg.dim:
        raise ConfigError(f"--twist needs {cfg.dim} components (dim={cfg.dim}), got {cfg.twist!r}")
    if not all(_is_number(t) for t in cfg.twist):
        raise ConfigError(f"--twist components must be finite numbers, got {cfg.twist!r}")
    cfg.twist = [float(t) for t in cfg.twist]
    if any(abs(t) > 0.5 for t in cfg.twist):
        raise ConfigError(f"--twist components must lie in [-0.5, 0.5] (units of 2 pi/L), got {cfg.twist}")
    _positive_int(cfg, "twists")
    if cfg.twists > 1:
        if cfg.system != "hydrogen":
            raise ConfigError(f"--twists is an option of --system hydrogen; the electron gas "
                              f"averages twists over runs (one --twist each, then `eos`)")
        if any(cfg.twist):
            raise ConfigError(f"--twists {cfg.twists} sets the twists (a Monkhorst-Pack grid); "
                              f"leave --twist unset, got {cfg.twist}")
        if cfg.batch % cfg.twists ** 3:
            raise ConfigError(f"--batch must be a multiple of the {cfg.twists ** 3} twists of "
                              f"--twists {cfg.twists} (walkers are (protons, twist) pairs), "
                              f"got {cfg.batch}")
    if cfg.cutoff is not None:
        _positive(cfg, "cutoff")
    _positive(cfg, "cutoff_tail")
    _positive(cfg, "ewald_accuracy")
    if cfg.ewald_accuracy >= 1e-3:
        raise ConfigError(f"--ewald-accuracy must be below 1e-3, got {cfg.ewald_accuracy}")
    for name in ("backflow_hidden", "van_hidden"):
        widths = getattr(cfg, name)
        if name == "van_hidden" and widths is None:
            continue
        if not widths or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ConfigError(f"--{name.replace('_', '-')} must be a non-empty list of positive "
                              f"integers, got {widths!r}")
    if cfg.sampling not in SAMPLINGS:
        raise ConfigError(f"--sampling must be one of {SAMPLINGS}, got {cfg.sampling!r}")
    _positive_int(cfg, "mc_steps")
    _positive_int(cfg, "mc_thermalize", minimum=0)
    _non_negative(cfg, "mc_width")
    if not _is_number(cfg.mc_target_acceptance) or not 0 < cfg.mc_target_acceptance < 1:
        raise ConfigError(f"--mc-target-acceptance must lie in (0, 1), got {cfg.mc_target_acceptance}")
    if cfg.ep_backflow not in EP_BACKFLOWS:
        raise ConfigError(f"--ep-backflow must be one of {EP_BACKFLOWS}, got {cfg.ep_backflow!r}")
    if cfg.laplacian not in LAPLACIANS:
        raise ConfigError(f"--laplacian must be one of {LAPLACIANS}, got {cfg.laplacian!r}")
    _positive_int(cfg, "eloc_chunk")
    _positive_int(cfg, "proton_flow_chunk", minimum=0)
    _positive_int(cfg, "steps")
    _positive_int(cfg, "batch", minimum=2)
    if cfg.optimizer is None:
        cfg.optimizer = "adam" if cfg.system == "ocp" else "sr"
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")
    if cfg.system == "ocp" and cfg.proton_gradient is None:
        cfg.proton_gradient = "score" if cfg.optimizer == "sr" else "total"
    if cfg.lr is None:
        cfg.lr = 1e-3 if cfg.optimizer == "adam" else OCP_SR_LR if cfg.system == "ocp" else 0.05
    if cfg.sr_max_norm is None:
        cfg.sr_max_norm = OCP_SR_MAX_NORM_PER_PROTON * cfg.n if cfg.system == "ocp" else 1e-3
    _positive(cfg, "lr")
    _non_negative(cfg, "lr_decay_steps")
    for name in ("lr_van", "lr_flow", "sr_max_norm_van", "sr_max_norm_flow", "lr_protons",
                 "sr_max_norm_protons"):
        if getattr(cfg, name) is not None:
            _positive(cfg, name)
    _positive(cfg, "sr_damping")
    _positive(cfg, "sr_max_norm")
    if cfg.sr_solver not in SR_SOLVERS:
        raise ConfigError(f"--sr-solver must be one of {SR_SOLVERS}, got {cfg.sr_solver!r}")
    _positive_int(cfg, "sr_cg_iters")
    _positive(cfg, "sr_cg_tol")
    _non_negative(cfg, "clip_eloc")
    if not _is_number(cfg.max_folded_fraction) or not 0 <= cfg.max_folded_fraction <= 1:
        raise ConfigError(f"--max-folded-fraction must lie in [0, 1], got {cfg.max_folded_fraction!r}")
    _positive_int(cfg, "eval_steps", minimum=0)
    for name in ("watchdog_factor", "watchdog_min_s", "watchdog_first_s"):
        _positive(cfg, name)
    _positive_int(cfg, "checkpoint_every")
    _positive_int(cfg, "progress_every")
    if not _is_number(cfg.average_fraction) or not 0 < cfg.average_fraction <= 1:
        raise ConfigError(f"--average-fraction must lie in (0, 1], got {cfg.average_fraction}")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or not 0 <= cfg.seed <= SEED_MAX:
        raise ConfigError(f"--seed must be an integer in [0, 2^63 - 1], got {cfg.seed!r}")
    _non_negative(cfg, "divergence_sigma")
    _positive_int(cfg, "max_rewinds", minimum=0)
    if not _is_number(cfg.rewind_lr_factor) or not 0 < cfg.rewind_lr_factor < 1:
        raise ConfigError(f"--rewind-lr-factor must lie in (0, 1), got {cfg.rewind_lr_factor!r}")
    if not isinstance(cfg.out, str) or not cfg.out.strip():
        raise ConfigError(f"--out must be a directory path, got {cfg.out!r}")
    return cfg
