"""Command-line interface: ``freeenergy {train,summary,bench,slurm}`` (also ``python freeenergy.py ...``).

Every option of :class:`freeenergy.config.Config` is a flag (``--mc-steps``, ``--no-backflow``,
...). Precedence: defaults < ``--config FILE`` (JSON or YAML) < flags. Bad input exits with
status 2 and a message naming the option, before any model is built.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import textwrap
import typing

from freeenergy import config as config_mod
from freeenergy import slurm
from freeenergy.config import Config, ConfigError

_ALIASES = {"backflow": ["--backflow"], "n": ["--n"]}


def _field_type(field):
    hint = typing.get_type_hints(Config)[field.name]
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is typing.Union and args:
        hint = args[0]
    return hint


class HelpFormatter(argparse.HelpFormatter):
    """Wraps help at spaces only, so ``--mc-steps`` is never split at its hyphen."""

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that takes no abbreviations: a mistyped or shortened flag exits 2
    naming it, and is never read as a longer one (``--cpu`` as ``--cpus-per-task``). The parsers
    of subcommands are of this class too: add_subparsers makes its parent's class."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def add_config_flags(parser: argparse.ArgumentParser):
    """One flag per Config field, default None (meaning: not given on the command line)."""
    group = parser.add_argument_group(
        "run options (in a --config file: the same names with underscores, mc_steps: 30)")
    for field in dataclasses.fields(Config):
        flag = "--" + field.name.replace("_", "-")
        hint = _field_type(field)
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        # a field without HELP still gets its flag; tests/test_help.py catches the omission
        shown = "unset" if default is None else default
        helptext = f"{config_mod.HELP.get(field.name, '')} (default: {shown})".lstrip()
        helptext = helptext.replace("%", "%%")  # argparse %-formats help strings
        if hint is bool:
            group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                               default=None, help=helptext)
        elif field.name == "twist":
            group.add_argument(flag, dest=field.name, type=float, nargs="+", default=None,
                               metavar="T", help=helptext)
        elif hint is list or typing.get_origin(hint) is list:
            group.add_argument(flag, dest=field.name, type=int, nargs="+", default=None, help=helptext)
        else:
            group.add_argument(flag, dest=field.name, type=hint, default=None, help=helptext)
    parser.add_argument("--config", dest="config_file", default=None, metavar="FILE",
                        help="JSON or YAML file of run options (examples/ has some); its keys are "
                        "the option names with underscores (mc_steps: 30) where the flags have "
                        "hyphens (--mc-steps 30); command-line flags override it")


def config_from_args(args, base: Config | None = None) -> Config:
    values = {}
    if getattr(args, "config_file", None):
        values.update(config_mod.load_file(args.config_file))
    for field in dataclasses.fields(Config):
        value = getattr(args, field.name, None)
        if value is not None:
            values[field.name] = value
    cfg = config_mod.from_dict(values, base)
    return config_mod.validate(cfg)


def _cmd_train(args) -> int:
    if args.resume:
        from freeenergy.train import rundir
        if args.out is not None and os.path.abspath(args.out) != os.path.abspath(args.resume):
            raise ConfigError(f"--out {args.out} cannot be combined with --resume {args.resume} "
                              f"(a run continues in its own directory)")
        saved = rundir.read_config(args.resume)
        cfg = config_from_args(args, base=dataclasses.replace(saved))
        cfg.out = args.resume
        conflicts = rundir.resume_conflicts(saved, cfg)
        if conflicts:
            raise ConfigError(f"--resume {args.resume}: these options differ from the run's own "
                              f"and would make it another run: {'; '.join(conflicts)}. Only "
                              f"{', '.join(sorted(config_mod.RESUME_MAY_CHANGE - {'out'}))} may "
                              f"change on --resume; start a new run with another --out instead")
    else:
        cfg = config_from_args(args)
    from freeenergy.train import driver  # (imports JAX: after the input is known to be good)
    return driver.train(cfg, resume=bool(args.resume))


def _cmd_summary(args) -> int:
    from freeenergy.train import rundir, summary
    rundir.read_config(args.run_dir)  # a clear error for a missing or damaged config.json
    if not os.path.exists(os.path.join(args.run_dir, "log.csv")):
        raise ConfigError(f"{args.run_dir}: no log.csv (not a run directory)")
    result = summary.compute_summary(args.run_dir)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(summary.format_summary(result))
    return 0


def _cmd_eval(args) -> int:
    from freeenergy.train import driver, evaluate
    from freeenergy.train.watchdog import Watchdog
    cfg = evaluate.load_run_config(args.run_dir)  # a clear error before anything is built
    with driver.Signals() as signals, Watchdog(cfg.watchdog_factor, cfg.watchdog_min_s,
                                                 cfg.watchdog_first_s) as dog:
        return evaluate.eval_run_dir(args.run_dir, args.steps, args.batch, args.burn_in,
                                     args.seed, signals=signals, dog=dog,
                                     mc_steps=args.mc_steps, sampling=args.sampling,
                                     anneal_steps=args.anneal_steps,
                                     anneal_moves=args.anneal_moves,
                                     anneal_kernel=args.anneal_kernel,
                                     bar_samples=args.bar_samples, bar_chains=args.bar_chains,
                                     bar_thin=args.bar_thin, bar_equil=args.bar_equil)


def _cmd_bench(args) -> int:
    from freeenergy import bench
    cfg = config_from_args(args)
    result = bench.run_bench(cfg, repeats=args.repeats, warmup=args.warmup)
    from freeenergy import devices
    if not devices.layout().is_root:
        return 0
    if args.json:
        print(json.dumps(result))
    else:
        print(bench.format_bench(result))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="freeenergy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train (or resume) a variational free-energy run",
                             formatter_class=HelpFormatter)
    add_config_flags(p_train)
    p_train.add_argument("--resume", metavar="DIR", default=None,
                         help="continue the run in DIR from its last checkpoint with its saved "
                         "config.json; flags may change how it is run: --steps is the new total "
                         "number of steps (not steps to add), --checkpoint-every, --eval-steps, ...")
    p_train.set_defaults(func=_cmd_train)
    p_sum = sub.add_parser("summary", help="print the summary of a finished or running run")
    p_sum.add_argument("run_dir", metavar="RUN_DIR", help="run directory (with its log.csv)")
    p_sum.add_argument("--json", action="store_true", help="print JSON (the form of summary.json)")
    p_sum.set_defaults(func=_cmd_summary)
    p_eval = sub.add_parser(
        "eval", help="evaluate the frozen parameters of a run's last checkpoint: the variational "
        "bound to quote (writes RUN_DIR/eval.json)")
    p_eval.add_argument("run_dir", metavar="RUN_DIR",
                        help="run directory whose newest checkpoint is evaluated")
    p_eval.add_argument("--steps", type=int, default=200,
                        help="measured steps of the joint chain (default 200); error bars by "
                        "reblocking over steps")
    p_eval.add_argument("--batch", type=int, default=None,
                        help="walkers per step (default: the run's batch); the checkpoint's "
                        "walkers are repeated or cut to fit")
    p_eval.add_argument("--burn-in", type=int, default=20,
                        help="unmeasured steps first, with the move width adapting (default 20)")
    p_eval.add_argument("--seed", type=int, default=None,
                        help="seed of the evaluation's random stream (default: the run's seed)")
    p_eval.add_argument("--mc-steps", type=int, default=None,
                        help="Metropolis moves of x per step (default: the run's)")
    p_eval.add_argument("--sampling", choices=("joint", "redraw"), default=None,
                        help="chain for (n, x): joint (exact, default of new runs) or redraw "
                        "(legacy, biased; to measure that bias)")
    p_eval.add_argument("--anneal-steps", type=int, default=0, metavar="K",
                        help="OCP runs: also anneal every exact sample from the flow to the "
                        "Boltzmann density through K temperatures (annealed importance sampling; "
                        "eval.json gets F_ais, f_ais_ex, ais_ess_per_sample, U_ais_ex); 0: off")
    p_eval.add_argument("--anneal-moves", type=int, default=1, metavar="M",
                        help="Metropolis moves of all latent coordinates at each temperature")
    p_eval.add_argument("--anneal-kernel", default="rw", metavar="KERNEL",
                        help="the moves: rw (random walk, one flow pass each; default) or mala "
                        "(Langevin proposals from the gradient of the log-weight, about three "
                        "passes each, far larger steps)")
    p_eval.add_argument("--bar-samples", type=int, default=0, metavar="M",
                        help="3D OCP runs: also the two-sided (Bennett acceptance ratio) free "
                        "energy from M Metropolis configurations of the Boltzmann density and M "
                        "fresh flow samples (eval.json gets F_bar, f_bar_ex, bar); 0: off")
    p_eval.add_argument("--bar-chains", type=int, default=8, metavar="C",
                        help="Metropolis chains for --bar-samples")
    p_eval.add_argument("--bar-thin", type=int, default=10, metavar="T",
                        help="sweeps (N single-proton moves each) between kept configurations")
    p_eval.add_argument("--bar-equil", type=int, default=200, metavar="E",
                        help="sweeps of each chain before the first kept configuration")
    p_eval.set_defaults(func=_cmd_eval)
    p_bench = sub.add_parser("bench", formatter_class=HelpFormatter,
                             help="time training steps (sampling, local energy, gradients, SR)")
    add_config_flags(p_bench)
    p_bench.add_argument("--repeats", type=int, default=5,
                         help="timed steps, the median reported (default 5)")
    p_bench.add_argument("--warmup", type=int, default=1,
                         help="untimed steps after compilation (default 1)")
    p_bench.add_argument("--json", action="store_true", help="print one JSON object")
    p_bench.set_defaults(func=_cmd_bench)
    slurm.add_subparser(sub)  # slurm {single,multi,array}: render / write / submit job scripts
    from freeenergy.results import cli as results_cli
    results_cli.add_subparsers(sub)  # eos, mstar, hugoniot: tables from evaluated runs
    return parser


def main(argv=None) -> int:
    from freeenergy.train import signals
    signals.install_early()  # a SIGTERM/SIGUSR1 during start-up still ends in exit 75
    parser = make_parser()
    args = parser.parse_args(argv)
    from freeenergy import devices
    try:
        return int(args.func(args) or 0)
    except devices.ParallelSetupError as exc:
        print(f"freeenergy: error: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, FileNotFoundError) as exc:
        # raised identically on every rank (same input), before any collective: all exit 2
        if not devices.mpi_requested() or devices.layout().is_root:
            print(f"freeenergy: error: {exc}", file=sys.stderr)
        return 2
    except BaseException:
        # an error on one rank would leave the others waiting in a collective forever
        if devices.mpi_requested():
            import traceback
            traceback.print_exc()
            sys.stderr.flush()
            devices.abort(1)
        raise


if __name__ == "__main__":
    sys.exit(main())
