"""Dense hydrogen (``--system hydrogen``): the proton flow, the VAN and the √flow on one bound.

N classical protons S (N, 3) and N electrons x (N, 3) (paramagnetic: N/2 per spin, spin-major)
in a cube of side L. The trial density matrix is sum_{S,n} p(S) p(n|S) U_S|Phi_n><Phi_n|U_S^+, so

    F <= E_{S~p} E_{n~p(n|S)} E_{x~|psi_{n,S}|^2} [k_B T (ln p(S) + ln p(n|S)) + E_loc(x; n, S)]
         + k_B T ln N! + 3 N k_B T ln Lambda_p                                   (Ha, total)

with ln N! counted once, E_loc = -1/2 sum_i lap_i psi/psi + V(x, S) and V the Ewald energy of
all 2N charges (electron-electron, electron-proton and proton-proton; neutral, so no background
term), times ``coupling``. The models, per configuration:

* p(S): the proton flow of ``models.proton_flow`` (unchanged from the OCP);
* p(n|S): the VAN over the plane-wave occupations, conditioned on the structure factors of S
  (``models.proton_features``: permutation- and translation-invariant, periodic);
* psi_{n,S}(x) = Phi_n(z) |det dz/dx|^(1/2) with the backflow z(x; S) of ``models.backflow``:
  spin-aware electron-electron pairs plus an electron-proton term, exact analytic Laplacian.

Twist averaging (``--twists K``): the K^3 Monkhorst-Pack twists each get their own levels, VAN
base p_t(n|S) (one network, the twist in its context) and Slater determinants; a walker row is a
(S, twist) pair, rows in groups of K^3 sharing one S (``samplers.twist_of_rows``), so the bound
is E_S[k_B T ln p(S) + mean_t E_{n,x}[k_B T ln p_t(n|S) + E_loc,t]] with the same estimator
over rows. The proton score rows are repeated over the group's twists, which makes the row
formulas below give the group's gradient and Fisher matrix exactly (B rows = B/K^3 groups).

Per step, on each shard's walkers: one step of the exact joint chain for (S, n, x)
(``samplers.make_hydrogen_sampler``); ln p(S) and its score through the flow's inverse (exact
implicit derivatives); ln p(n|S) and its score; E_loc; d ln psi. Then one gather of every walker's
row, and the same estimates and update on every shard (with ``--sr-solver cg`` only the scalar
terms are gathered: the score rows stay on their shard, the gradients and the score means are one
sum over shards, and SR runs conjugate gradients on summed Fisher-vector products, so adding
devices adds walker capacity even for the proton flow's tens of thousands of parameters):

    f_s = k_B T (ln p(S_s) + ln p(n_s|S_s)) + E_loc,s
    g_protons = mean[(f_s - mean f) d ln p(S_s)],  g_van = mean[(f_s - mean f) d ln p(n_s|S_s)]
    g_flow = 2 Re mean[(E_loc - b(n_s))^* d ln psi]          (VMC, as for the electron gas)

(score functions with the batch-mean baseline; E_loc clipped in the gradients only, as for the
electron gas), preconditioned by SR per group (protons: the classical Fisher of p(S)) or Adam.

Reported totals (per atom in the outputs): F, E = E[E_loc] + 3/2 N k_B T, K = E[K_e] + 3/2 N k_B T,
V, S = (E - F)/k_B T, P = (2K + V)/(3 Omega) (virial; includes the protons' N k_B T/Omega), and
the parts: electrons E_e = E[E_loc], S_e = -E[ln p(n|S)], F_e = E_e - k_B T S_e; protons
E_p = 3/2 N k_B T, F_p = F - F_e, S_p = S - S_e; V_pp, the protons' own Ewald energy in a
neutralizing background (the OCP energy of the same S).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from freeenergy import devices
from freeenergy.config import Config, ConfigError
from freeenergy.hamiltonian import make_local_energy
from freeenergy.models.proton_features import feature_vectors, structure_features
from freeenergy.models.van import default_hidden, make_van
from freeenergy.models.wavefunction import make_wavefunction
from freeenergy.optim import make_optimizer
from freeenergy.samplers import (SamplerState, initial_positions, make_hydrogen_sampler,
                                 make_metropolis, make_width_adaptation, twist_of_rows)
from freeenergy.system import make_system
from freeenergy.train.build_ocp import proton_flow_of
from freeenergy.train.step import (TrainState, _per_sample_flat, _shard_key, clip_to_mad,
                                   pack_rows, sum_score_rows, update_diagnostics)

GROUPS = ("protons", "van", "flow")


@dataclasses.dataclass(frozen=True)
class HydrogenParts:
    """The per-walker pieces of the hydrogen step, for one shard's b walkers (timed one by one
    by the benchmark):
      sample(params, sampler, key) -> ProtonDraw      (the joint chain, ``samplers``)
      local_energy(flow_params, x, n, s) -> (E_loc (b,) complex, {"kinetic", "potential"})
      scores(params, draw) -> (ln p(S) (b,), {"protons", "van", "re", "im"} score rows)
      make_update(collectives, gather_scores) -> update(params, opt_state, draw, scale) ->
        (params, opt_state, grads, updates, stats), the step after sampling
    Rows are (S, twist) pairs in groups of n_twists (``samplers.twist_of_rows``); b must be a
    multiple of n_twists.
    """

    sample: Callable
    local_energy: Callable
    scores: Callable
    make_update: Callable


def make_hydrogen_potential(ewald, n: int):
    """(potential(x, s), proton_energy(s)): the Ewald energy (Ha) of N electrons x (N, 3) and N
    protons s (N, 3) together (neutral), and of the protons alone in a neutralizing background."""
    charges = jnp.concatenate([-jnp.ones(n), jnp.ones(n)])

    def potential(x, s):
        return ewald.energy(jnp.concatenate([x, s]), charges.astype(x.dtype))

    def proton_energy(s):
        return ewald.energy_same_charge(s, 1.0)

    return potential, proton_energy


def make_hydrogen_observables(n: int, temperature: float, volume: float, constant: float):
    """observables(t) -> whole-batch stats (totals; module docstring) from per-walker terms t:
    logp_s, logp_n, e_re, kinetic, potential, v_pp, acceptance, n_acceptance, s_acceptance,
    det_sign, ep_min_det (B,). ``folded`` is the fraction of walkers whose √flow has
    det dz/dx <= 0, ``folded_ep`` that of walkers with an electron whose electron-proton block
    alone, I + sum_I d xi/dd, has det <= 0 (the term that folded the measured runs)."""
    proton_kinetic = 1.5 * n * temperature

    def observables(t):
        kt = temperature
        f = kt * (t["logp_s"] + t["logp_n"]) + t["e_re"] + constant
        e = t["e_re"] + proton_kinetic
        k = t["kinetic"] + proton_kinetic
        p = (2.0 * k + t["potential"]) / (3.0 * volume)
        s = (e - f) / kt
        s_e = -t["logp_n"]
        f_e = t["e_re"] - kt * s_e
        stats = {}
        for name, v in (("F", f), ("E", e), ("K", k), ("V", t["potential"]), ("P", p), ("S", s),
                        ("F_electrons", f_e), ("E_electrons", t["e_re"]), ("S_electrons", s_e),
                        ("F_protons", f - f_e), ("S_protons", s - s_e), ("V_pp", t["v_pp"]),
                        ("K_electrons", t["kinetic"])):
            stats[name] = jnp.mean(v)
            stats[name + "_var"] = jnp.var(v)
        one = jnp.ones((), f.dtype)
        stats.update(E_protons=proton_kinetic * one, acceptance=jnp.mean(t["acceptance"]),
                     n_acceptance=jnp.mean(t["n_acceptance"]),
                     s_acceptance=jnp.mean(t["s_acceptance"]),
                     s_local_acceptance=jnp.mean(t["s_local_acceptance"]),
                     folded=jnp.mean((t["det_sign"] <= 0).astype(f.dtype)),
                     folded_ep=jnp.mean((t["ep_min_det"] <= 0).astype(f.dtype)))
        return stats

    return observables


def hydrogen_coefficients(t: dict, temperature: float, clip_eloc: float = 0.0):
    """Per-row weights (c, c_re, c_im), each (B,), of the gradient estimators from the whole
    batch's scalar terms t (logp_s, logp_n, e_re, e_im, e_bare (B,)): g_protons = c @ o_protons,
    g_van = c @ o_van (score functions with the batch-mean baseline) and g_flow = c_re @ o_re +
    c_im @ o_im (VMC); E_loc clipped to ``clip_eloc`` mean absolute deviations (0: off)."""
    batch = t["logp_s"].shape[0]
    resid = t["e_re"] - t["e_bare"]
    if clip_eloc > 0:
        resid = clip_to_mad(resid, clip_eloc)
    f = temperature * (t["logp_s"] + t["logp_n"]) + t["e_bare"] + resid
    return ((f - jnp.mean(f)) / batch, 2.0 * (resid - jnp.mean(resid)) / batch,
            2.0 * (t["e_im"] - jnp.mean(t["e_im"])) / batch)


def hydrogen_gradients(params: dict, t: dict, temperature: float, clip_eloc: float = 0.0):
    """The three groups' gradients of the bound and their SR score rows (module docstring).

    Args:
      params: {"protons", "van", "flow"} parameter pytrees (only their structure is used).
      t: whole-batch per-walker terms: logp_s, logp_n, e_re, e_im, e_bare (B,) and the score
        rows o_protons (B, Pp), o_van (B, Pv), o_re, o_im (B, Pf).
      temperature: k_B T (Ha); clip_eloc: E_loc clipping (mean absolute deviations; 0: off).
    Returns (grads, rows): gradients as pytrees like ``params``; rows[g] (R_g, P_g) with
    rows^T rows the group's Fisher matrix (centered scores / sqrt(B); flow: real and imaginary).
    """
    batch = t["logp_s"].shape[0]
    c, c_re, c_im = hydrogen_coefficients(t, temperature, clip_eloc)
    flat = {"protons": c @ t["o_protons"], "van": c @ t["o_van"],
            "flow": c_re @ t["o_re"] + c_im @ t["o_im"]}
    norm = jnp.sqrt(jnp.asarray(batch, c.dtype))
    center = lambda o: o - jnp.mean(o, axis=0)
    rows = {"protons": center(t["o_protons"]) / norm, "van": center(t["o_van"]) / norm,
            "flow": jnp.concatenate([center(t["o_re"]), center(t["o_im"])]) / norm}
    grads = {g: ravel_pytree(params[g])[1](flat[g]) for g in GROUPS}
    return grads, rows


def distributed_hydrogen_gradients(params: dict, full: dict, rows: dict, temperature: float,
                                   clip_eloc: float, collectives, start):
    """``hydrogen_gradients`` with every score row kept on its shard (``--sr-solver cg``).

    Args:
      full: the whole batch's scalar terms (B,) (gathered); rows: THIS shard's b score rows
        o_protons, o_van, o_re, o_im (b, P_g), the shard's rows being full's rows start..start+b.
      collectives: ``devices.Collectives``; one ``sum`` of the weighted row sums and the row
        sums (for the global centering) is the only communication.
    Returns (grads, rows): the same gradients as ``hydrogen_gradients`` on the gathered batch,
    and this shard's rows of each group's X (globally centered, divided by sqrt(B)).
    """
    batch = full["logp_s"].shape[0]
    b = rows["o_van"].shape[0]
    c, c_re, c_im = [jax.lax.dynamic_slice_in_dim(v, start, b)
                     for v in hydrogen_coefficients(full, temperature, clip_eloc)]
    flat, x = sum_score_rows(collectives, batch, rows,
                             {"protons": [(c, "o_protons")], "van": [(c, "o_van")],
                              "flow": [(c_re, "o_re"), (c_im, "o_im")]})
    centered = {"protons": x["o_protons"], "van": x["o_van"],
                "flow": jnp.concatenate([x["o_re"], x["o_im"]])}
    grads = {g: ravel_pytree(params[g])[1](flat[g]) for g in GROUPS}
    return grads, centered


def build_hydrogen(cfg: Config, lay: devices.Layout):
    """The ``driver.Built`` of a hydrogen run (same interface as the electron gas's)."""
    from freeenergy.train.driver import Built, make_to_local
    system = make_system(cfg)
    el = system.electrons
    n, length, kt = cfg.n, system.length, system.temperature
    n_twists = len(system.twist_systems)
    per_shard = lay.per_shard(cfg.batch)
    if per_shard % n_twists:
        raise ConfigError(f"--batch {cfg.batch} gives {per_shard} walkers per shard "
                          f"({lay.n_shards} shards), not a multiple of the {n_twists} twists of "
                          f"--twists {cfg.twists}: use a multiple of {n_twists * lay.n_shards}")
    flow = proton_flow_of(cfg, 3, length)
    gvecs = feature_vectors(length)
    twist_table = jnp.asarray(system.twists)

    def context(s, t):
        """The VAN's conditioning: structure factors of S (and, with twists, the twist)."""
        f = structure_features(s, gvecs)
        return f if n_twists == 1 else jnp.concatenate([f, twist_table[t].astype(f.dtype)])

    context_size = len(gvecs) + (0 if n_twists == 1 else 3)
    van_hidden = tuple(cfg.van_hidden) if cfg.van_hidden else default_hidden(el.space.size)
    van = make_van(el.space, van_hidden, twist_energies=system.level_energies)
    wf = make_wavefunction(el.space, system.kvecs, length, cfg.backflow, cfg.backflow_hidden,
                           batch_safe_linalg=cfg.laplacian != "folx", spin_pairs=True,
                           ep=cfg.ep_backflow)
    potential, proton_energy = make_hydrogen_potential(system.ewald, n)
    e_loc = make_local_energy(wf.log_psi, potential, cfg.coupling, cfg.laplacian, wf.derivatives)
    coupling = float(cfg.coupling)

    van_sample = lambda p, key, s, t: van.sample(p, key, context(s, t), t)
    van_log_prob = lambda p, n_, s, t: van.log_prob(p, n_, context(s, t), t)
    log_abs = lambda p, x, nst: wf.log_psi(p, x, nst[0], nst[1], nst[2])[0]
    metropolis = make_metropolis(log_abs, length, cfg.mc_steps)
    sample = make_hydrogen_sampler(flow.sample, van_sample, van_log_prob, log_abs, metropolis,
                                   cfg.sampling, n_twists,
                                   jax.vmap(flow.log_prob, (None, 0)), length)
    adapt = make_width_adaptation(length, cfg.mc_target_acceptance)
    optimizer = make_optimizer(
        cfg.optimizer, cfg.per_group(cfg.lr, cfg.lr_van, cfg.lr_flow, cfg.lr_protons),
        cfg.sr_damping, cfg.per_group(cfg.sr_max_norm, cfg.sr_max_norm_van,
                                      cfg.sr_max_norm_flow, cfg.sr_max_norm_protons),
        cfg.lr_decay_steps or None, cfg.sr_solver, cfg.sr_cg_iters, cfg.sr_cg_tol)
    observables = make_hydrogen_observables(n, kt, system.volume, system.ideal_constant())
    # (K, D) level energies of every position of the occupation sequence, per twist
    level_energies = jnp.asarray(np.tile(system.level_energies, (1, len(el.n_per_species))))
    collectives = devices.Collectives(lay)
    chunk = cfg.eloc_chunk
    rows_twist = lambda b: twist_of_rows(b, n_twists)

    def local_energy(p, x, occ, s):
        return jax.lax.map(lambda a: e_loc(p, *a), (x, occ, s, rows_twist(x.shape[0])),
                           batch_size=min(chunk, x.shape[0]))

    def proton_log_prob(params, s, with_grad: bool):
        """ln p(S) (b,) of every row (and the score rows (b, P_protons)), computed once per
        group of n_twists rows and repeated over the group."""
        s_groups = s[::n_twists]
        if not with_grad:
            logp = jax.vmap(flow.log_prob, (None, 0))(params["protons"], s_groups)
            return jnp.repeat(logp, n_twists, axis=0)
        logp, g_s = jax.vmap(jax.value_and_grad(flow.log_prob), (None, 0))(
            params["protons"], s_groups)
        rows = _per_sample_flat(g_s, s_groups.shape[0])
        return jnp.repeat(logp, n_twists, axis=0), jnp.repeat(rows, n_twists, axis=0)

    def scores(params, draw):
        """ln p(S) (b,) and the score rows (b, P_group) of the three groups."""
        logp_s, rows_s = proton_log_prob(params, draw.s, True)
        b = draw.x.shape[0]
        twist = rows_twist(b)
        g_van = jax.vmap(jax.grad(van_log_prob), (None, 0, 0, 0))(params["van"], draw.n, draw.s,
                                                                 twist)
        rows = {"protons": rows_s, "van": _per_sample_flat(g_van, b)}
        if cfg.backflow:
            jac = jax.vmap(jax.jacrev(lambda q, x, occ, s, t: jnp.stack(wf.log_psi(q, x, occ, s, t))),
                           (None, 0, 0, 0, 0))(params["flow"], draw.x, draw.n, draw.s, twist)
            rows["re"] = _per_sample_flat(jax.tree.map(lambda a: a[:, 0], jac), b)
            rows["im"] = _per_sample_flat(jax.tree.map(lambda a: a[:, 1], jac), b)
        else:
            rows["re"] = rows["im"] = jnp.zeros((b, 0), draw.x.dtype)
        return logp_s, rows

    def walker_terms(params, draw, logp_s):
        eloc, parts = local_energy(params["flow"], draw.x, draw.n, draw.s)
        e_bare = jnp.sum(draw.n.astype(eloc.real.dtype)
                         * level_energies[rows_twist(draw.x.shape[0])], axis=1)
        return {"logp_s": logp_s, "logp_n": draw.logp_n, "e_re": jnp.real(eloc),
                "e_im": jnp.imag(eloc), "e_bare": e_bare,
                "kinetic": parts["kinetic"], "potential": parts["potential"],
                "v_pp": coupling * jax.vmap(proton_energy)(draw.s),
                "acceptance": draw.acceptance, "n_acceptance": draw.n_acceptance,
                "s_acceptance": draw.s_acceptance, "s_local_acceptance": draw.s_local_acceptance,
                **dict(zip(("det_sign", "ep_min_det"), jax.vmap(wf.fold_check, (None, 0, 0))(
                    params["flow"], draw.x, draw.s)))}

    def make_update(coll: devices.Collectives, gather_scores: bool):
        """update(params, opt_state, draw, update_scale) -> (params, opt_state, grads, updates,
        stats) for ONE shard's rows of ``draw`` (a ``ProtonDraw``). ``gather_scores``: one
        gather of every row's terms and score rows, then the same estimates and update on every
        shard (the direct SR solve); False: only the scalar terms are gathered, each shard keeps
        its score rows and the optimizer sums Fisher-vector products over shards (CG)."""

        def update(params, opt_state, draw, update_scale=1.0):
            logp_s, o = scores(params, draw)
            terms = walker_terms(params, draw, logp_s)
            score_rows = dict(o_protons=o["protons"], o_van=o["van"], o_re=o["re"],
                              o_im=o["im"])
            if gather_scores:
                packed, unpack = pack_rows({**terms, **score_rows})
                full = unpack(coll.gather(packed))
                stats = observables(full)
                grads, rows = hydrogen_gradients(params, full, kt, cfg.clip_eloc)
                updates, opt_state = optimizer.update(grads, opt_state, params, scores=rows)
            else:
                packed, unpack = pack_rows(terms)
                full = unpack(coll.gather(packed))
                stats = observables(full)
                b = draw.x.shape[0]
                start = coll.shard_index() * b if coll.layout.n_shards > 1 else 0
                grads, rows = distributed_hydrogen_gradients(params, full, score_rows, kt,
                                                             cfg.clip_eloc, coll, start)
                updates, opt_state = optimizer.update(grads, opt_state, params, scores=rows,
                                                      reduce=coll.sum)
            updates = jax.tree.map(lambda u: update_scale * u, updates)
            return optax.apply_updates(params, updates), opt_state, grads, updates, stats

        return update

    update = make_update(collectives, cfg.sr_solver != "cg")

    def train_step(state: TrainState, key, update_scale):
        draw = sample(state.params, state.sampler, _shard_key(key, collectives))
        new_params, opt_state, _, updates, stats = update(state.params, state.opt_state, draw,
                                                          update_scale)
        sampler = next_sampler(state.sampler, draw, stats, True)
        stats.update(update_diagnostics(updates, new_params))
        return TrainState(new_params, opt_state, sampler, state.step + 1), stats

    def next_sampler(sampler: SamplerState, draw, stats: dict, adapt_widths: bool):
        """The walkers after a step; the x and the local proton move widths adapted to their
        acceptances (all walkers' means) when ``adapt_widths``."""
        width, s_width = sampler.width, sampler.s_width
        if adapt_widths:
            width = adapt(width, stats["acceptance"])
            s_width = adapt(s_width, stats["s_local_acceptance"])
        stats.update(width=width, s_width=s_width)
        return SamplerState(x=draw.x, n=draw.n, width=width, s=draw.s, s_width=s_width)

    def make_eval(adapt_width: bool):
        def eval_step(params, sampler: SamplerState, key):
            draw = sample(params, sampler, _shard_key(key, collectives))
            # ln p(S) of the kept protons: the sampler's local move has it (no second inverse)
            logp_s = draw.logp_s if draw.logp_s is not None else proton_log_prob(params, draw.s,
                                                                                 False)
            packed, unpack = pack_rows(walker_terms(params, draw, logp_s))
            stats = observables(unpack(collectives.gather(packed)))
            return next_sampler(sampler, draw, stats, adapt_width), stats
        return eval_step

    W, R = devices.walker_spec(), devices.replicated()
    sampler_spec = SamplerState(x=W, n=W, width=R, s=W, s_width=R)
    state_spec = TrainState(params=R, opt_state=R, sampler=sampler_spec, step=R)
    step = devices.shard_step(train_step, (state_spec, R, R), (state_spec, R))
    eval_steps = {a: devices.shard_step(make_eval(a), (R, sampler_spec, R), (sampler_spec, R))
                  for a in (False, True)}
    width0 = cfg.mc_width if cfg.mc_width > 0 else 0.3 * cfg.rs

    def thermalize_shard(params, sampler, key):
        """Protons from the flow, n from p(n|S), then ``mc_thermalize`` moves of x."""
        key = _shard_key(key, collectives)
        k_s, k_n, k_mc = jax.random.split(key, 3)
        s, _ = jax.vmap(flow.sample, (None, 0))(
            params["protons"], jax.random.split(k_s, per_shard // n_twists))
        s = jnp.repeat(s, n_twists, axis=0)
        twist = rows_twist(per_shard)
        occ, _ = jax.vmap(van_sample, (None, 0, 0, 0))(
            params["van"], jax.random.split(k_n, per_shard), s, twist)
        sampler = sampler._replace(n=occ, s=s)
        if cfg.mc_thermalize == 0:
            return sampler
        x, acceptance = make_metropolis(log_abs, length, cfg.mc_thermalize)(
            params["flow"], sampler, (occ, s, twist), k_mc)
        mean_acc = collectives.sum(jnp.sum(acceptance)) / cfg.batch
        return sampler._replace(x=x, width=adapt(sampler.width, mean_acc))

    thermalize = devices.shard_step(thermalize_shard, (R, sampler_spec, R), sampler_spec)

    def init_params(key):
        k_p, k_van, k_flow = jax.random.split(key, 3)
        zeros = jnp.zeros((n, 3))
        return {"protons": flow.init(k_p), "van": van.init(k_van, jnp.zeros(context_size)),
                "flow": wf.init(k_flow, zeros, zeros)}

    def global_state(key):
        k_params, k_x, k_s = jax.random.split(key, 3)
        params = init_params(k_params)
        x = initial_positions(k_x, cfg.batch, n, 3, length)
        s = initial_positions(k_s, cfg.batch, n, 3, length)   # replaced when thermalized
        sampler = SamplerState(x=x, n=jnp.zeros((cfg.batch, el.space.size), jnp.int32),
                               width=jnp.asarray(width0, x.dtype), s=s,
                               s_width=jnp.asarray(0.05 * cfg.rs, x.dtype))
        return TrainState(params=params, opt_state=optimizer.init(params), sampler=sampler,
                          step=jnp.zeros((), jnp.int32))

    to_local = make_to_local(lay, cfg.batch)

    def init_state(key):
        state = to_local(global_state(key))
        k_th = jax.random.fold_in(key, 7)
        return state._replace(sampler=thermalize(state.params, state.sampler, k_th))

    probe = jax.eval_shape(init_params, jax.random.PRNGKey(0))
    n_params = {g: int(sum(np.prod(a.shape) for a in jax.tree.leaves(probe[g]))) for g in GROUPS}
    return Built(cfg=cfg, system=system, layout=lay, global_state=global_state,
                 init_state=init_state, to_local=to_local, step=step, n_params=n_params,
                 parts=HydrogenParts(sample=sample, local_energy=local_energy, scores=scores,
                                   make_update=make_update),
                 eval_step=eval_steps[False], burn_in_step=eval_steps[True],
                 van_hidden=van_hidden)
