"""Train the VAE of Kingma & Welling (arXiv:1312.6114) on MNIST with Pyro's SVI objectives.

    python examples/mnist_svi.py --data-dir ../shared/data          # all defaults, on the CPU
    python examples/mnist_svi.py --cuda --eval-samples 5000         # the literature's protocol, on a GPU
    python examples/mnist_svi.py --resume results/mnist_svi --num-epochs 40   # train a finished run further

The flags build a pyro_vae.RunConfig and pyro_vae.run carries it out (pyro_vae/experiment.py:
data -> model -> objective -> fit -> evaluate -> outputs). Results go to --out: metrics.json,
evaluation.pt, checkpoint.pt, best.pt and the plots reconstructions.png, samples.png, latent.png,
elbo.png and khat.png (manifold.png when --z-dim is 2). Every failure ends in one line and exit
status 2.
"""

import sys

from pyro_vae.cli import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
