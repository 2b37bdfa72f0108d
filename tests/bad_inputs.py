"""Bad input and broken run directories, each with the words its one-line error must contain.

Shared by tests/test_faults.py (which asserts exit status 2, one line, nothing written) and
scripts/bad-input-table.py (which times every case as a fresh process, for the issue notes).
Placeholders: {tmp} a fresh temporary directory, {run} a copy of a finished run directory
(SMALL, 6 steps, checkpoints every 2), {root} the checkout.
"""

SMALL = ["--dim", "2", "--n", "5", "--rs", "2", "--theta", "0.5", "--batch", "16",
         "--mc-steps", "4", "--mc-thermalize", "10", "--backflow-hidden", "8", "--van-hidden", "16",
         "--seed", "3", "--eloc-chunk", "8"]

# (name, extra train flags, words the message contains)
BAD_FLAGS = [
    ("twist nan", ["--twist", "nan", "0"], "--twist"),
    ("twist out of range", ["--twist", "0.7", "0"], "--twist"),
    ("twist wrong length", ["--twist", "0.1"], "--twist"),
    ("mc-width nan", ["--mc-width", "nan"], "--mc-width"),
    ("mc-width inf", ["--mc-width", "inf"], "--mc-width"),
    ("lr-decay-steps nan", ["--lr-decay-steps", "nan"], "--lr-decay-steps"),
    ("seed beyond 64 bits", ["--seed", str(2 ** 64)], "--seed"),
    ("seed negative", ["--seed", "-1"], "--seed"),
    ("rs negative", ["--rs", "-1"], "--rs"),
    ("batch 1", ["--batch", "1"], "--batch"),
    ("cutoff too small", ["--n", "40", "--cutoff", "1.0"], "--cutoff"),
    ("odd n paramagnetic", ["--paramagnetic", "--n", "5"], "--paramagnetic"),
    ("unknown optimizer", ["--optimizer", "lbfgs"], "--optimizer"),
    ("unknown SR solver", ["--sr-solver", "lu"], "--sr-solver"),
    ("SR CG iterations 0", ["--sr-cg-iters", "0"], "--sr-cg-iters"),
    ("rewind factor 1", ["--rewind-lr-factor", "1"], "--rewind-lr-factor"),
    ("out under a file", ["--out", "{root}/README.md/run"], "not a directory"),
    ("out not writable", ["--out", "/proc/freeenergy-run"], "--out"),
    ("config is a directory", ["--config", "{tmp}"], "is a directory"),
    ("config missing", ["--config", "{tmp}/missing.yaml"], "cannot read"),
]

# (name, file name, file text, words the message contains)
BAD_FILES = [
    ("malformed YAML", "c.yaml", "rs: [1, 2\nn: 5\n", "malformed YAML"),
    ("malformed JSON", "c.json", '{"rs": 1.0,', "malformed JSON"),
    ("config not a mapping", "c.yaml", "- rs\n- 2\n", "mapping"),
    ("twist a number", "c.yaml", "twist: 0.1\n", "--twist"),
    ("twist not numbers", "c.yaml", "twist: [a, 0]\n", "--twist"),
    ("mc_width a string", "c.yaml", "mc_width: abc\n", "--mc-width"),
    ("paramagnetic a string", "c.yaml", 'paramagnetic: "no"\n', "--paramagnetic"),
    ("backflow an integer", "c.json", '{"backflow": 1}', "--backflow"),
    ("steps not an integer", "c.yaml", "steps: 2.5\n", "--steps"),
    ("n a boolean", "c.json", '{"n": true}', "--n"),
    ("hidden widths not integers", "c.yaml", "backflow_hidden: [8, x]\n", "--backflow-hidden"),
    ("unknown key", "c.json", '{"temperature": 3}', "unknown option"),
]

# (name, train --resume flags, words the message contains): the run directory must stay untouched
BAD_RESUMES = [
    ("resume changes rs", ["--rs", "3"], "rs: 2.0 (run) -> 3.0"),
    ("resume changes coupling", ["--coupling", "0.5"], "coupling"),
    ("resume changes seed", ["--seed", "4"], "seed"),
    ("resume changes n", ["--n", "7"], "n: 5 (run) -> 7"),
    ("resume changes theta", ["--theta", "0.4"], "theta"),
    ("resume changes twist", ["--twist", "0.25", "0"], "twist"),
    ("resume changes batch", ["--batch", "32"], "batch"),
    ("resume changes model size", ["--van-hidden", "32"], "van_hidden"),
    ("resume steps below done", ["--steps", "3"], "below the 6 steps"),
    ("resume with another out", ["--out", "{tmp}/elsewhere"], "cannot be combined"),
]
