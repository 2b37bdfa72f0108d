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
from typing import Any, Optional

SYSTEMS = ("ueg",)
LAPLACIANS = ("analytic", "folx", "loop")
OPTIMIZERS = ("sr", "adam")
SAMPLINGS = ("joint", "redraw")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the option."""


@dataclasses.dataclass
class Config:
    # --- physical system ---
    system: str = "ueg"            # "ueg": uniform electron gas (no protons)
    dim: int = 2                   # spatial dimension, 2 or 3
    n: int = 13                    # total number of electrons
    rs: float = 1.0                # Wigner-Seitz radius (bohr)
    theta: float = 0.15            # k_B T / E_F, E_F of the infinite gas at the same density and polarization
    paramagnetic: bool = False     # two spin species with n/2 electrons each (else fully polarized)
    coupling: float = 1.0          # lambda multiplying the Coulomb energy (0: ideal gas)
    twist: Optional[list] = None   # twist in units of 2 pi / L, components in [-0.5, 0.5]; None = Gamma point
    cutoff: Optional[float] = None  # single-particle energy cutoff (Ha); None: chosen from n and theta
    cutoff_tail: float = 1e-5      # default cutoff leaves at most this many ideal-gas particles outside
    ewald_accuracy: float = 1e-10  # target accuracy of the Ewald sum (Ha)
    # --- models ---
    backflow: bool = True          # use the √flow backflow (False: bare plane waves)
    backflow_hidden: list = dataclasses.field(default_factory=lambda: [32, 32])
    van_hidden: Optional[list] = None  # VAN (MADE) hidden widths; None: two layers of min(D-1, max(64, round(4 sqrt D))), D = occupation positions
    # --- sampling ---
    sampling: str = "joint"        # "joint": exact chain for p(n)|psi_n(x)|^2 (VAN draw accepted by the |psi|^2 ratio); "redraw": legacy, biased
    mc_steps: int = 50             # all-electron Metropolis moves per training step
    mc_thermalize: int = 200       # Metropolis moves before the first step
    mc_width: float = 0.0          # initial move width (bohr); 0: 0.3 rs (then adapted to the target acceptance)
    mc_target_acceptance: float = 0.5
    laplacian: str = "analytic"    # "analytic" (pair-structure, fastest), "folx" (forward Laplacian), "loop" (reference)
    eloc_chunk: int = 32           # walkers per vectorized chunk of the local-energy evaluation
    # --- optimization ---
    steps: int = 100               # training steps
    batch: int = 256               # walkers (and VAN samples) per step
    optimizer: str = "sr"          # "sr" (stochastic reconfiguration) or "adam"
    lr: float = 0.05               # learning rate (SR: natural-gradient step; Adam: step size)
    lr_van: Optional[float] = None   # learning rate of the VAN group; None: lr
    lr_flow: Optional[float] = None  # learning rate of the flow group; None: lr
    lr_decay_steps: float = 0.0    # lr / (1 + step / lr_decay_steps); 0: constant
    sr_damping: float = 1e-3       # diagonal shift of the Fisher matrices
    sr_max_norm: float = 1e-3      # bound on the Fisher norm of each SR update (trust region)
    sr_max_norm_van: Optional[float] = None   # the bound for the VAN group; None: sr_max_norm
    sr_max_norm_flow: Optional[float] = None  # the bound for the flow group; None: sr_max_norm
    clip_eloc: float = 5.0         # clip E_loc in the GRADIENTS to mean +- this many mean absolute deviations; 0: off (estimates are never clipped)
    max_folded_fraction: float = 0.05  # stop (exit 1, no checkpoint of the bad state) when more walkers than this have det dz/dx <= 0
    # --- run control ---
    seed: int = 42
    out: str = "runs/default"
    checkpoint_every: int = 50     # steps between checkpoints (also written at the end and on SIGTERM/SIGUSR1)
    average_fraction: float = 0.5  # final fraction of the steps used for the summary estimates
    progress_every: int = 1        # steps between progress lines
    eval_steps: int = 0            # after training, evaluate the frozen parameters for this many steps (eval.json); 0: no evaluation
    watchdog_factor: float = 20.0  # a step slower than this many times the median step ends the run (exit 75: requeue resumes)
    watchdog_min_s: float = 300.0  # ... but never before this many seconds (s)
    watchdog_first_s: float = 3600.0  # limit (s) for the first step (compilation) and for set-up

    def per_group(self, value: float, van: Optional[float], flow: Optional[float]) -> dict:
        """{"van": ..., "flow": ...} with the group's own value where given, else ``value``."""
        return {"van": value if van is None else van, "flow": value if flow is None else flow}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


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
    """Reads a JSON or YAML config file into a dict."""
    with open(path) as fh:
        text = fh.read()
    if path.endswith((".yaml", ".yml")):
        import yaml
        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return data


def _positive(cfg, name):
    value = getattr(cfg, name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
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


def validate(cfg: Config) -> Config:
    """Checks every option; raises ConfigError naming the first bad one. Returns cfg (twist normalized)."""
    if cfg.system not in SYSTEMS:
        raise ConfigError(f"--system must be one of {SYSTEMS}, got {cfg.system!r}")
    if cfg.dim not in (2, 3):
        raise ConfigError(f"--dim must be 2 or 3, got {cfg.dim!r}")
    _positive_int(cfg, "n")
    if cfg.paramagnetic and cfg.n % 2:
        raise ConfigError(f"--paramagnetic needs an even --n (n/2 per spin), got n={cfg.n}")
    _positive(cfg, "rs")
    _positive(cfg, "theta")
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
            raise ConfigError(f"--{name.replace('_', '-')} must be a non-empty list of positive integers, got {widths!r}")
    if cfg.sampling not in SAMPLINGS:
        raise ConfigError(f"--sampling must be one of {SAMPLINGS}, got {cfg.sampling!r}")
    _positive_int(cfg, "mc_steps")
    _positive_int(cfg, "mc_thermalize", minimum=0)
    _non_negative(cfg, "mc_width")
    if not _is_number(cfg.mc_target_acceptance) or not 0 < cfg.mc_target_acceptance < 1:
        raise ConfigError(f"--mc-target-acceptance must lie in (0, 1), got {cfg.mc_target_acceptance}")
    if cfg.laplacian not in LAPLACIANS:
        raise ConfigError(f"--laplacian must be one of {LAPLACIANS}, got {cfg.laplacian!r}")
    _positive_int(cfg, "eloc_chunk")
    _positive_int(cfg, "steps")
    _positive_int(cfg, "batch", minimum=2)
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")
    _positive(cfg, "lr")
    _non_negative(cfg, "lr_decay_steps")
    for name in ("lr_van", "lr_flow", "sr_max_norm_van", "sr_max_norm_flow"):
        if getattr(cfg, name) is not None:
            _positive(cfg, name)
    _positive(cfg, "sr_damping")
    _positive(cfg, "sr_max_norm")
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
    if not isinstance(cfg.seed, int):
        raise ConfigError(f"--seed must be an integer, got {cfg.seed!r}")
    return cfg
