"""`zssbir <args>` under torch.distributed.run, recording what each rank did (a helper of tests/test_train.py).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py train --config c.yaml ...

With ZSSBIR_TEST_DDP_OUT set (read only here), every rank writes ``<that folder>/rank<r>.pt``:
{"rank", "world", "forward_calls", "batches" (per step: the pair ids and labels it trained on),
"state" (its final state dict)}, so the test can check that both ranks trained, on which images,
and that they ended with the same weights.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch


def record_forward(model_cls, log: list, patch=None) -> None:
    """Make ``model_cls.forward`` append (pair ids, labels, domains) of every batch it sees to ``log``.
    ``patch(obj, name, value)`` sets the attribute (pass ``monkeypatch.setattr`` in a test)."""
    original = model_cls.forward

    def forward(self, batch):
        log.append({"pair_id": list(batch["pair_id"]), "label": batch["label"].tolist(),
                    "domain": torch.as_tensor(batch["domain"]).tolist()})
        return original(self, batch)

    (patch or setattr)(model_cls, "forward", forward)


def main(argv: list[str]) -> int:
    from zssbir import cli
    from zssbir.models.clusterretri import ClusterRetri
    from zssbir.models.dmwa import DMWA
    from zssbir.runtime import distributed_env
    from zssbir.training import loop

    log: list = []
    for cls in (ClusterRetri, DMWA):
        record_forward(cls, log)
    results = []
    original_train = loop.train

    def train(*args, **kwargs):
        results.append(original_train(*args, **kwargs))
        return results[-1]

    loop.train = train  # the CLI imports it from the module when it runs
    code = cli.main(argv)
    rank, world, _ = distributed_env()
    out = os.environ.get("ZSSBIR_TEST_DDP_OUT")
    if out and results:
        state = {k: v.detach().cpu().clone() for k, v in results[-1].model.state_dict().items()}
        torch.save({"rank": rank, "world": world, "forward_calls": len(log), "batches": log, "state": state},
                   Path(out) / f"rank{rank}.pt")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
