"""The residual distinguisher shared by the circuit-privacy tests (issue 12, section 1)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tenseal.sealapi as seal

from fedlab_kit.he.bfv import BfvPublic, BfvSecret


def rerandomise_only(self: BfvPublic, ct: seal.Ciphertext) -> None:
    """The old re-randomisation (a fresh encryption of zero, no flooding): the control."""
    zero = seal.Ciphertext()
    self.encryptor.encrypt_zero(ct.parms_id(), zero)
    self.evaluator.add_inplace(ct, zero)


def picks_truth(secret: BfvSecret, result: seal.Ciphertext,
                guesses: Sequence[seal.Ciphertext], truth: int, rng: np.random.Generator
                ) -> bool:
    """The attacker, who knows its keys, picks the hypothesis whose recomputed result
    differs from the returned one by the least noise (SEAL's noise budget of the
    difference); a tie is a coin toss. True when it picks the truth."""
    scores = []
    for guess in guesses:
        diff = seal.Ciphertext()
        secret.evaluator.sub(result, guess, diff)
        scores.append(secret.noise_budget(diff))
    if len(set(scores)) == 1:
        return int(rng.integers(0, len(scores))) == truth
    return int(np.argmax(scores)) == truth
