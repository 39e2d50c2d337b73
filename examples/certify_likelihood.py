"""Certify the test log-likelihood of a saved run: importance sampling against AIS, the BDMC sandwich,
the inference gaps (pyro_vae.certify). `python examples/certify_likelihood.py --help` lists the flags."""

import sys

from pyro_vae.cli import certify_main

if __name__ == "__main__":
    sys.exit(certify_main())
