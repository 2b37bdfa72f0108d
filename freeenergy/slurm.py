"""``freeenergy slurm {single,multi,array}``: render (and optionally submit) the SLURM job templates.

The templates ship inside the package, in ``freeenergy/slurm_templates/`` (``--template FILE``
renders a copy you have edited for your site). A line ``@INCLUDE NAME@`` is replaced by the file
NAME (next to the template, else the packaged one; its ``#%`` lines left out): the parts every
template shares, ``common_options.sbatch`` and ``common_run.sbatch``. Placeholders are ``@NAME@``
tokens; an ``#SBATCH`` line whose value was not given (partition, account, time) is rendered as
``##SBATCH ...``, which sbatch ignores, so the cluster's default applies, and a line holding only
a placeholder whose value is empty is left out (the GPU request of a ``--cpu`` job). Paths are
made absolute so the job does not depend on the directory it is submitted from.

Default is a dry run: the config is validated (the same checks ``freeenergy train`` makes before
building a model, plus the walker split over the ranks of a multi-node job), the script is
printed to stdout and nothing is written. ``--write PATH`` saves it (executable) and creates the
directory of the SLURM output file; ``--submit`` also runs ``sbatch``. For ``array`` the grid of
configs (``GRID_DIR/task_XXXX.yaml``, one per point, and ``GRID_DIR/index.tsv``) is written with
the script. Every error is a ConfigError (exit status 2) raised before anything is written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys

from freeenergy import config as config_mod, fileio
from freeenergy.config import Config, ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # holds the freeenergy package
TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slurm_templates")
TEMPLATES = {"single": "single_gpu.sbatch", "multi": "multi_node.sbatch", "array": "array.sbatch"}
PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
INCLUDE = re.compile(r"^@INCLUDE ([A-Za-z0-9_.-]+)@[ \t]*$")
OPTIONAL = ("PARTITION", "ACCOUNT", "TIME")  # unset: the #SBATCH line is commented out
_SLURM_NAME = re.compile(r"^[A-Za-z0-9_.,:+-]+$")
_MAX_SIGNAL_SECONDS = 65535  # SLURM keeps --signal's time in 16 bits


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------

def template_path(kind: str, template: str | None = None) -> str:
    path = template or os.path.join(TEMPLATE_DIR, TEMPLATES[kind])
    if not os.path.isfile(path):
        raise ConfigError(f"SLURM template {path} not found (the templates ship in "
                          f"{TEMPLATE_DIR}; pass --template FILE to use your own copy)")
    return path


def read_template(path: str) -> str:
    """The text of the template at ``path`` with its ``@INCLUDE NAME@`` lines replaced by the
    file NAME, from the template's directory or else the package's (``#%`` lines left out)."""
    with open(path) as fh:
        lines = fh.read().splitlines(keepends=True)
    out = []
    for line in lines:
        m = INCLUDE.match(line.rstrip("\n"))
        if not m:
            out.append(line)
            continue
        name = m.group(1)
        part = next((p for p in (os.path.join(os.path.dirname(os.path.abspath(path)), name),
                                 os.path.join(TEMPLATE_DIR, name)) if os.path.isfile(p)), None)
        if part is None:
            raise ConfigError(f"{path}: @INCLUDE {name}@: no file {name} next to it or in "
                              f"{TEMPLATE_DIR}")
        with open(part) as fh:
            out += [ln for ln in fh.read().splitlines(keepends=True) if not ln.startswith("#%")]
    return "".join(out)


def render(text: str, values: dict) -> str:
    """Substitutes every ``@NAME@`` of ``text`` with ``values[NAME]``.

    A value of None comments out its ``#SBATCH`` line (an error anywhere else); a line holding
    only a placeholder whose value is "" is left out; a placeholder without a value is an error,
    so no ``@NAME@`` survives rendering.
    """
    lines = []
    for line in text.splitlines(keepends=True):
        names = PLACEHOLDER.findall(line)
        missing = sorted({n for n in names if n not in values})
        if missing:
            raise ConfigError(f"template placeholder(s) {', '.join('@' + n + '@' for n in missing)} "
                              f"have no value (known: {', '.join(sorted(values))})")
        unset = [n for n in names if values[n] is None]
        if unset:
            if not line.startswith("#SBATCH"):
                raise ConfigError(f"template line needs a value for @{unset[0]}@: {line.strip()}")
            flag = re.match(r"#SBATCH\s+(-[-\w]*)?", line).group(1) or "option"
            option = "--" + unset[0].lower().replace("_", "-")
            lines.append(f"##SBATCH {flag}  (not set: the cluster's default; render with {option})\n")
            continue
        if names and not PLACEHOLDER.sub("", line).strip() and all(values[n] == "" for n in names):
            continue  # an empty line-long value: e.g. no GPU request in a --cpu job
        lines.append(PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), line))
    text = "".join(lines)
    left = PLACEHOLDER.findall(text)  # only possible if a value itself looks like a placeholder
    if left:
        raise ConfigError(f"rendering left placeholder(s) {', '.join('@' + n + '@' for n in left)}")
    return text


def parse_time(text: str) -> int:
    """Seconds of a SLURM time limit: M, M:S, H:M:S, D-H, D-H:M or D-H:M:S."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ConfigError(f"--time must be a SLURM time limit (M, M:S, H:M:S, D-H, D-H:M or D-H:M:S), "
                          f"got {text!r}")
    days, a, b, c = m.groups()
    parts = [int(a)] + [int(x) for x in (b, c) if x is not None]
    if days is None:
        # M, M:S, H:M:S
        seconds = {1: lambda p: 60 * p[0], 2: lambda p: 60 * p[0] + p[1],
                   3: lambda p: 3600 * p[0] + 60 * p[1] + p[2]}[len(parts)](parts)
    else:
        parts += [0] * (3 - len(parts))
        seconds = 86400 * int(days) + 3600 * parts[0] + 60 * parts[1] + parts[2]
    if seconds <= 0:
        raise ConfigError(f"--time must be positive, got {text!r}")
    return seconds


def _slurm_word(value, option):
    if value is not None and not _SLURM_NAME.match(str(value)):
        raise ConfigError(f"{option} may hold only letters, digits and _.,:+-, got {value!r}")
    return value


def _sbatch_path(path, option):
    if re.search(r"[\s%\"'\\$`]", path):
        raise ConfigError(f"{option} {path!r}: #SBATCH lines cannot hold whitespace, quotes, % or $")
    return path


def _positive_int(value, option):
    if value is None or value < 1:
        raise ConfigError(f"{option} must be an integer >= 1, got {value!r}")
    return value


def _fmt(x: float) -> str:
    return f"{x:g}"


# ----------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------

def load_config(path: str, overrides: dict | None = None) -> Config:
    """Config of FILE (with ``overrides``), validated like ``freeenergy train`` does before building
    a model (options, then the physics: basis against particle number, cutoff against T)."""
    try:
        values = config_mod.load_file(path)
    except ConfigError:
        raise
    except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ConfigError(f"--config {path}: {exc}") from None
    except Exception as exc:  # yaml.YAMLError
        raise ConfigError(f"--config {path}: cannot parse: {exc}") from None
    values.update(overrides or {})
    return check_config(config_mod.from_dict(values))


def check_config(cfg: Config) -> Config:
    config_mod.validate(cfg)
    from freeenergy.system import make_system  # the physics checks of `train`, no model built
    make_system(cfg)
    return cfg


def theta_from_temperature(temperature_ha: float, rs: float, dim: int, paramagnetic: bool) -> float:
    """Theta = k_B T / E_F, E_F of the infinite gas at density rs (same convention as the runs)."""
    from freeenergy.physics.box import fermi_energy
    return temperature_ha / fermi_energy(rs, dim, paramagnetic)


def make_grid(base: Config, root: str, rs_values, thetas=None, temps_k=None, temps_ha=None):
    """One validated Config per (rs, temperature) point, out = ROOT/<name>; returns [(name, cfg, T_Ha)].

    Temperatures are theta values, or k_B T in Kelvin / Hartree (converted with E_F(rs)). Systems
    with protons (ocp, hydrogen) take their temperature in kelvin (--temperature-K or
    --temperature-ha, stored as temperature_K); theta is then derived (hydrogen) or unused."""
    from freeenergy.physics.box import fermi_energy
    from freeenergy.physics.units import KB_HA_PER_K
    protons = base.system in ("ocp", "hydrogen")
    if protons and thetas:
        raise ConfigError(f"--system {base.system} grids take temperatures in kelvin "
                          "(--temperature-K) or hartree (--temperature-ha), not --theta")
    if protons and not (temps_k or temps_ha):
        if base.temperature_K is None:
            raise ConfigError(f"--system {base.system} grids need --temperature-K values")
        temps_k = [base.temperature_K]
    rs_list = list(rs_values) if rs_values else [base.rs]
    if temps_k:
        temps = [("T", t, "K", t * KB_HA_PER_K) for t in temps_k]
    elif temps_ha:
        temps = [("T", t, "Ha", t) for t in temps_ha]
    else:
        temps = [("theta", t, "", None) for t in (thetas or [base.theta])]
    points, names = [], set()
    for rs in rs_list:
        if not (isinstance(rs, (int, float)) and math.isfinite(rs) and rs > 0):
            raise ConfigError(f"--rs values must be positive numbers, got {rs!r}")
        e_fermi = fermi_energy(rs, 3 if base.system == "hydrogen" else (base.dim or 2),
                               base.paramagnetic or base.system == "hydrogen")
        for label, value, unit, t_ha in temps:
            if not (math.isfinite(value) and value > 0):
                option = {"K": "--temperature-K", "Ha": "--temperature-ha"}.get(unit, "--theta")
                raise ConfigError(f"{option} values must be positive numbers, got {value!r}")
            theta = value if t_ha is None else t_ha / e_fermi
            name = f"rs{_fmt(rs)}_{label}{_fmt(value)}{unit}"
            if name in names:
                raise ConfigError(f"grid point {name} appears twice (repeated --rs or temperature values)")
            names.add(name)
            point = {"rs": float(rs), "out": os.path.join(root, name)}
            if protons:
                point.update(temperature_K=float(value if unit == "K" else t_ha / KB_HA_PER_K),
                             gamma=None)
            else:
                point["theta"] = float(theta)
            cfg = config_mod.from_dict(point, base)
            try:
                check_config(cfg)
            except ConfigError as exc:
                what = f"T={value:g} {unit}" if protons else f"theta={theta:.6g}"
                raise ConfigError(f"grid point {name} (rs={_fmt(rs)}, {what}): {exc}") from None
            points.append((name, cfg, theta * e_fermi))
    return points


def write_grid(grid_dir: str, points) -> None:
    """GRID_DIR/task_XXXX.yaml (full config of each point) and GRID_DIR/index.tsv."""
    import yaml
    from freeenergy.physics.units import HARTREE_IN_KELVIN
    os.makedirs(grid_dir, exist_ok=True)
    for name in os.listdir(grid_dir):  # tasks left from a larger grid rendered here before
        if re.fullmatch(r"task_\d{4,}\.yaml", name):
            os.remove(os.path.join(grid_dir, name))
    rows = ["task\tname\trs\ttheta\tT_Ha\tT_K\tconfig\trun_dir"]
    for i, (name, cfg, t_ha) in enumerate(points):
        path = os.path.join(grid_dir, f"task_{i:04d}.yaml")
        fileio.write_text(path, f"# grid point {i}: {name} (written by `freeenergy slurm array`)\n"
                          + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        t_k = cfg.temperature_K if cfg.temperature_K is not None else t_ha * HARTREE_IN_KELVIN
        rows.append(f"{i}\t{name}\t{cfg.rs!r}\t{cfg.theta!r}\t{t_ha:.10g}\t{t_k:.10g}"
                    f"\t{path}\t{cfg.out}")
    with open(os.path.join(grid_dir, "index.tsv"), "w") as fh:
        fh.write("\n".join(rows) + "\n")


# ----------------------------------------------------------------------------------------------
# Command
# ----------------------------------------------------------------------------------------------

def _job_name(run_dir: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", os.path.basename(os.path.normpath(run_dir)))
    return ("fe-" + name)[:64]


def _gpu_request(kind: str, gpus_per_node: int = 4) -> str:
    """The #SBATCH GPU request of a GPU job (the GPU_REQUEST placeholder)."""
    if kind == "multi":
        return (f"#SBATCH --gpus-per-node={gpus_per_node}\n# (some clusters want --gres=gpu:G "
                f"instead of --gpus-per-node=G, or --exclusive, or a\n#  --constraint / --qos "
                f"line: add it here)")
    return ("#SBATCH --gpus=1\n# (some clusters want --gres=gpu:1 instead of --gpus=1, or a "
            "--constraint / --qos line: add it here)")


def _device_values(kind: str, cpu: bool) -> dict:
    """The placeholders that differ between a GPU job and a CPU job (``--cpu``: no GPU request
    anywhere, and JAX held to the CPU even on a node that has GPUs)."""
    if cpu:
        return {"GPU_REQUEST": "", "SRUN_GPU": "", "RANK_UNIT": "rank(s)",
                "PLATFORM": "export JAX_PLATFORMS=cpu   # a CPU job (rendered with --cpu): "
                            "no GPU, even where the node has one"}
    return {"GPU_REQUEST": _gpu_request(kind), "SRUN_GPU": "--gpus-per-task=1",
            "RANK_UNIT": "GPU(s)", "PLATFORM": ""}


def _multi_values(args, cfg: Config, saved: str, values: dict) -> str:
    """Checks the ranks of a multi-node job (one per GPU, or ``--ranks-per-node`` of a ``--cpu``
    job) against the batch, the run's own if it exists; sets NODES and RANKS_PER_NODE (and the
    GPU count in the GPU request) in ``values``; returns a note for the user."""
    nodes = _positive_int(args.nodes, "--nodes")
    if args.cpu:
        if args.gpus_per_node is not None:
            raise ConfigError("--gpus-per-node requests GPUs, and a --cpu job has none: give the "
                              "ranks per node with --ranks-per-node")
        per_node = _positive_int(1 if args.ranks_per_node is None else args.ranks_per_node,
                                 "--ranks-per-node")
        layout, unit = f"{nodes} node(s) x {per_node} rank(s) per node", "rank"
    else:
        per_node = _positive_int(4 if args.gpus_per_node is None else args.gpus_per_node,
                                 "--gpus-per-node")
        layout, unit = f"{nodes} node(s) x {per_node} GPU(s), one rank per GPU", "GPU"
        values["GPU_REQUEST"] = _gpu_request("multi", per_node)
    ranks = nodes * per_node
    batches = [("--batch", cfg.batch)]
    if os.path.exists(saved):
        try:
            with open(saved) as fh:
                batches.append((f"--batch of {saved}", int(json.load(fh)["config"]["batch"])))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{saved}: not a readable run config ({exc!r})") from None
    for option, batch in batches:
        if batch % ranks:
            raise ConfigError(f"{option} {batch} must be divisible by the {ranks} MPI ranks "
                              f"({layout})")
    values["NODES"], values["RANKS_PER_NODE"] = nodes, per_node
    return f"{ranks} rank(s), {cfg.batch // ranks} walkers per {unit}"


def run(args) -> int:
    kind = args.kind
    # 1. every check, before anything is written
    if args.submit and shutil.which("sbatch") is None:
        raise ConfigError("--submit: sbatch is not on PATH (not a SLURM login node?); use --write PATH "
                          "and submit it where SLURM is available")
    overrides = {}
    if args.run_dir is not None:
        overrides["out"] = args.run_dir
    cfg = load_config(args.config, overrides)
    run_dir = os.path.abspath(cfg.out)
    _slurm_word(args.partition, "--partition")
    _slurm_word(args.account, "--account")
    _positive_int(args.cpus_per_task, "--cpus-per-task")
    if args.job_name is not None and not re.fullmatch(r"[A-Za-z0-9_.+-]+", args.job_name):
        raise ConfigError(f"--job-name may hold only letters, digits and _.+-, got {args.job_name!r}")
    if not 1 <= args.signal_seconds <= _MAX_SIGNAL_SECONDS:
        raise ConfigError(f"--signal-seconds must lie in [1, {_MAX_SIGNAL_SECONDS}], "
                          f"got {args.signal_seconds}")
    if args.time is not None:
        limit = parse_time(args.time)
        if args.signal_seconds >= limit:
            raise ConfigError(f"--signal-seconds {args.signal_seconds} must be shorter than --time "
                              f"{args.time} ({limit} s)")
    if getattr(args, "ranks_per_node", None) is not None and not args.cpu:
        raise ConfigError("--ranks-per-node is for --cpu jobs; a GPU job runs one rank per GPU "
                          "(--gpus-per-node)")
    python = args.python or sys.executable
    values = {
        "JOB_NAME": args.job_name or _job_name(run_dir),
        "PARTITION": args.partition, "ACCOUNT": args.account, "TIME": args.time,
        "CPUS_PER_TASK": args.cpus_per_task, "SIGNAL_SECONDS": args.signal_seconds,
        "PYTHON": shlex.quote(python), "FREEENERGY_ROOT": shlex.quote(ROOT),
        **_device_values(kind, args.cpu),
    }
    notes = []
    points, grid_dir = None, None
    if kind in ("single", "multi"):
        values["CONFIG"] = shlex.quote(os.path.abspath(args.config))
        values["RUN_DIR"] = shlex.quote(run_dir)
        values["OUTPUT"] = os.path.join(_sbatch_path(run_dir, "--run-dir"), "slurm-%j.out")
        log_dir = run_dir
        default_script = os.path.join(run_dir, "job.sbatch")
        saved = os.path.join(run_dir, "config.json")
        if os.path.exists(saved):
            notes.append(f"{run_dir} already holds a run: the job resumes it with its saved config.json")
        if kind == "multi":
            notes.append(_multi_values(args, cfg, saved, values))
    else:
        if not (args.rs or args.theta or args.temperature_k or args.temperature_ha):
            raise ConfigError("slurm array needs a grid: --rs and/or --theta (or --temperature-K, "
                              "--temperature-ha)")
        points = make_grid(cfg, run_dir, args.rs, args.theta, args.temperature_k, args.temperature_ha)
        grid_dir = os.path.abspath(args.grid_dir or os.path.join(run_dir, "grid"))
        log_dir = os.path.join(run_dir, "slurm-logs")
        values["GRID_DIR"] = shlex.quote(grid_dir)
        values["OUTPUT"] = os.path.join(_sbatch_path(log_dir, "--run-dir"), "%x-%A_%a.out")
        last = len(points) - 1
        array = f"0-{last}" if last > 0 else "0"
        if args.max_parallel is not None:
            array += f"%{_positive_int(args.max_parallel, '--max-parallel')}"
        values["ARRAY"] = array
        if last >= 1000:
            notes.append(f"{len(points)} tasks: SLURM's default MaxArraySize is 1001 (task ids 0-1000); "
                         f"check `scontrol show config | grep MaxArraySize`")
        default_script = os.path.join(run_dir, "array.sbatch")
    script = render(read_template(template_path(kind, args.template)), values)

    # 2. dry run, write, or submit
    if points is not None:
        table = [f"grid: {len(points)} task(s) -> {grid_dir}/task_XXXX.yaml, runs in {run_dir}/"]
        table += [f"  {i:4d}  {name:<24} rs={cfg_.rs:g} "
                  + (f"T={cfg_.temperature_K:.6g} K" if cfg_.temperature_K is not None
                     else f"theta={cfg_.theta:.6g}") + f" (k_B T = {t_ha:.6g} Ha)"
                  for i, (name, cfg_, t_ha) in enumerate(points)]
        notes = table + notes
    path = args.write or (default_script if args.submit else None)
    if path is None:
        sys.stdout.write(script)
        for note in notes + ["dry run: nothing written (--write PATH saves the script"
                             + (" and the grid" if points is not None else "")
                             + "; --submit also runs sbatch)"]:
            print(note, file=sys.stderr)
        return 0
    path = os.path.abspath(path)
    if points is not None:
        write_grid(grid_dir, points)
    os.makedirs(log_dir, exist_ok=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(script)
    os.chmod(path, 0o755)
    for note in notes:
        print(note, file=sys.stderr)
    print(f"wrote {path}", file=sys.stderr)
    if not args.submit:
        print(f"submit with: sbatch {shlex.quote(path)}", file=sys.stderr)
        return 0
    proc = subprocess.run(["sbatch", path], capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        print(f"freeenergy: error: sbatch refused {path} (exit status {proc.returncode}): "
              f"{_sbatch_hint(proc.stderr + proc.stdout, args.cpu)}", file=sys.stderr)
        return 2
    print(f"monitor: squeue -u $USER; tail -f {log_dir}/*.out; freeenergy summary RUN_DIR",
          file=sys.stderr)
    return 0


def _sbatch_hint(message: str, cpu: bool) -> str:
    """What to try after sbatch refused a rendered script with ``message``."""
    if not cpu and re.search(r"gres|gpu", message, re.IGNORECASE):
        return ("no GPUs on this partition? render with --cpu (a CPU job), or pick a partition "
                "with GPUs (--partition; `sinfo -o '%P %G'` lists them)")
    if re.search(r"account|association", message, re.IGNORECASE):
        return "check --account against `sacctmgr show assoc user=$USER`"
    if re.search(r"partition", message, re.IGNORECASE):
        return "check --partition against `sinfo` (the partitions you may use)"
    if re.search(r"time limit", message, re.IGNORECASE):
        return "check --time against the partition's limit (`sinfo -o '%P %l'`)"
    return ("the options of the script are in its #SBATCH lines; compare --cpus-per-task, --time, "
            "--partition with what `sinfo` shows")


def add_subparser(sub) -> None:
    """Registers ``slurm {single,multi,array}`` on the CLI's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cpu", action="store_true",
                        help="a CPU job: no GPU requested (no --gpus lines, no --gpus-per-task), "
                        "JAX on the CPU; for small systems and the one-component plasma, or a "
                        "partition without GPUs. Default: GPU jobs")
    common.add_argument("--config", required=True, metavar="FILE",
                        help="JSON or YAML config of the run (for array: the base of every grid point)")
    common.add_argument("--run-dir", default=None, metavar="DIR",
                        help="run directory (array: the directory holding one run directory per "
                        "point); default: the config's out")
    common.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's)")
    common.add_argument("--account", default=None, help="SLURM account (default: the cluster's)")
    common.add_argument("--time", default=None, metavar="D-HH:MM:SS",
                        help="time limit of one job (it requeues itself until the run is done); "
                        "default: the partition's")
    common.add_argument("--signal-seconds", type=int, default=300, metavar="S",
                        help="USR1 this many seconds before the time limit (must cover one training "
                        "step plus a checkpoint; SLURM may send it up to 60 s earlier); default 300")
    common.add_argument("--cpus-per-task", type=int, default=4, metavar="C",
                        help="CPU cores per task: per GPU, or per rank of a --cpu job; default 4")
    common.add_argument("--job-name", default=None, help="default: fe-<run directory name>")
    common.add_argument("--python", default=None, metavar="PATH",
                        help="Python the job runs (default: this one); the environment variable "
                        "PYTHON overrides it at run time")
    common.add_argument("--template", default=None, metavar="FILE",
                        help="render this template instead of the packaged one (e.g. your edited "
                        "copy of freeenergy/slurm_templates/single_gpu.sbatch)")
    common.add_argument("--write", default=None, metavar="PATH",
                        help="write the script here (executable) instead of printing it")
    common.add_argument("--submit", action="store_true",
                        help="write the script (to --write, default RUN_DIR/job.sbatch or "
                        "RUN_DIR/array.sbatch) and submit it with sbatch")
    p = sub.add_parser("slurm", help="render (dry run), write or submit a SLURM job script",
                       description=__doc__.split("\n\n")[0])
    kinds = p.add_subparsers(dest="kind", required=True)
    kinds.add_parser("single", parents=[common],
                     help="one run on one GPU (--cpu: on CPU cores)")
    p_multi = kinds.add_parser("multi", parents=[common],
                               help="one run on several nodes, one MPI rank per GPU (--cpu: "
                               "--ranks-per-node ranks per node)")
    p_multi.add_argument("--nodes", type=int, default=1, help="default 1")
    p_multi.add_argument("--gpus-per-node", type=int, default=None, metavar="G",
                         help="GPUs per node, one rank each; default 4 (not with --cpu)")
    p_multi.add_argument("--ranks-per-node", type=int, default=None, metavar="R",
                         help="MPI ranks per node of a --cpu job, each with --cpus-per-task "
                         "cores; default 1")
    p_array = kinds.add_parser("array", parents=[common],
                               help="a job array over a grid of (rs, theta) or (rs, T), one GPU "
                               "(--cpu: CPU cores) per point")
    p_array.add_argument("--rs", type=float, nargs="+", default=None, metavar="RS",
                         help="rs values (default: the config's)")
    temps = p_array.add_mutually_exclusive_group()
    temps.add_argument("--theta", type=float, nargs="+", default=None, metavar="THETA",
                       help="theta = k_B T / E_F values (default: the config's)")
    temps.add_argument("--temperature-K", dest="temperature_k", type=float, nargs="+", default=None,
                       metavar="T", help="temperatures in Kelvin (theta follows from E_F(rs))")
    temps.add_argument("--temperature-ha", type=float, nargs="+", default=None, metavar="T",
                       help="k_B T in Hartree (theta follows from E_F(rs))")
    p_array.add_argument("--grid-dir", default=None, metavar="DIR",
                         help="where task_XXXX.yaml and index.tsv go; default RUN_DIR/grid")
    p_array.add_argument("--max-parallel", type=int, default=None, metavar="N",
                         help="at most N tasks running at once (--array=0-K%%N)")
    p.set_defaults(func=run)
