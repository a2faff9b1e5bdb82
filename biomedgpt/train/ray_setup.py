"""Code that runs in every process of the local Ray instance, so it imports nothing but the standard library.

Ray calls the `worker_process_setup_hook` of the job's runtime env in each process it starts (its controller,
its bookkeeping actors and the training workers) and unpickles it by reference first, importing the module that
defines it. Kept in `ray_launch`, the hook pulled PyTorch Lightning and torch into every one of them: about 8 s
of CPU per process, 7 processes per worker-group start on the local instance.
"""

from __future__ import annotations

import logging


def quiet_ray_workers() -> None:
    """Ray's `worker_process_setup_hook` for the local instance: Ray Train's placement-group cleaner asks the
    state API, which a Ray started without its dashboard does not have, once a second for the whole run, and
    warns each time; those warnings are dropped (errors still show)."""
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(
        logging.ERROR
    )
