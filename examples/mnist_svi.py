"""Train the VAE of Kingma & Welling (arXiv:1312.6114) on MNIST with Pyro's SVI objectives.

    python examples/mnist_svi.py                      # CPU defaults, about 10 minutes on 2 cores
    python examples/mnist_svi.py --cuda --eval-samples 5000   # the literature's protocol, on a GPU

The steps (data -> model -> objective -> fit -> evaluate -> plots) are in pyro_vae/experiment.py;
every flag is listed by --help. Results go to --out: metrics.json, checkpoint.pt, best.pt and the
plots reconstructions.png, samples.png, latent.png and elbo.png.
"""

import sys

from pyro_vae.experiment import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
