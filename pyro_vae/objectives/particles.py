"""The option every Monte Carlo objective shares."""

from ..registry import Option

NUM_PARTICLES = Option(
    "num_particles", int, 1, "Monte Carlo samples of z per image in the training objective",
    flag="--num-particles", minimum=1,
)


def check_num_particles(num_particles: int) -> int:
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}")
    return num_particles
