"""The results layer: from run directories to tables, derived quantities and figures.

Everything here reads what a run directory holds -- ``config.json`` (the resolved config and the
derived physics) and ``eval.json`` (the frozen-parameter evaluation, the numbers to quote) --
and never the training averages of ``log.csv`` / ``summary.json``:

* ``runs``: finds run directories (given directly, by a glob, or as the directory of a SLURM
  array, whose subdirectories are the runs) and reads them;
* ``table``: one row per state point, per particle, with error bars and units; runs at several
  twists averaged; written as CSV, JSON and Markdown (``freeenergy eos``);
* ``consistency``: S against -dF/dT along isochores and P against -dF/dv along isotherms, by
  finite differences of the evaluated F with propagated errors (columns of the eos table);
* ``mstar``: the effective mass m*/m from the entropy, S / S_0 with S_0 the exact canonical ideal
  gas of the same basis, and from the slope of S(T) (``freeenergy mstar``);
* ``hugoniot``: the Rankine-Hugoniot function along isotherms and its root
  (``freeenergy hugoniot``).

Units: Hartree atomic units; per particle (electron for ``ueg``, proton for ``ocp``); S in k_B;
P in Ha/bohr^dim (and GPa in 3D); temperatures in Ha and K; densities in g/cm^3 where the
particles carry nuclear mass (``ocp``, ``hydrogen``).
"""
