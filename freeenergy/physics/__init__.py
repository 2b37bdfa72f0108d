"""Physics layer: periodic box, Ewald sums, plane waves, exact ideal-gas references (pure JAX/NumPy)."""
