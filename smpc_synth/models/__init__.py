"""Generators (gaussian, vae, gan; aim, mst with differential privacy) on encoded tables, and
the released Synthesizer."""

from smpc_synth.models.aim import AIMGenerator, AIMParams
from smpc_synth.models.base import Generator, NeuralGenerator, NeuralParams
from smpc_synth.models.gan import GANGenerator, GANParams
from smpc_synth.models.gaussian import GaussianGenerator, GaussianParams, sufficient_stats
from smpc_synth.models.marginal import MarginalGenerator, Privacy
from smpc_synth.models.mst import MSTGenerator, MSTParams
from smpc_synth.models.registry import (
    available_generators,
    check_batch_rows,
    check_epochs_apply,
    epochs_problem,
    get_generator,
    hyperparameters,
    planned_epochs,
    register,
    trains_in_epochs,
)
from smpc_synth.models.synthesizer import GENERATOR_FILE, Synthesizer
from smpc_synth.models.vae import VAEGenerator, VAEParams

__all__ = [
    "GENERATOR_FILE",
    "AIMGenerator",
    "AIMParams",
    "GANGenerator",
    "GANParams",
    "GaussianGenerator",
    "GaussianParams",
    "Generator",
    "MSTGenerator",
    "MSTParams",
    "MarginalGenerator",
    "NeuralGenerator",
    "NeuralParams",
    "Privacy",
    "Synthesizer",
    "VAEGenerator",
    "VAEParams",
    "available_generators",
    "check_batch_rows",
    "check_epochs_apply",
    "epochs_problem",
    "get_generator",
    "hyperparameters",
    "planned_epochs",
    "register",
    "sufficient_stats",
    "trains_in_epochs",
]
