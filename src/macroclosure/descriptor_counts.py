"""How many inputs the particle closure encoder reads and how many analytic closure variables it
can add: plain numbers, importable without torch, so the configuration check can use them."""

RADIAL_BASIS = 8  # Gaussians of the pair distance per atom (the per-pair work is ~ this)
DESCRIPTORS_PER_ATOM = 2 + RADIAL_BASIS  # pair energy, kinetic energy, radial basis
# means and mean products (p <= q) over atoms: pooled moments are per-atom work, cheap beside the
# per-pair basis, and give more inputs than a latent dimension of 32 (published) needs
POOLED_FEATURES = DESCRIPTORS_PER_ATOM + DESCRIPTORS_PER_ATOM * (DESCRIPTORS_PER_ATOM + 1) // 2
THERMODYNAMIC_VARIABLES = ("potential energy per atom", "power per atom", "squared force per atom")
