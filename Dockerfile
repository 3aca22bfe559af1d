# syntax=docker/dockerfile:1
# misgen on an NVIDIA GPU. Build and run (README.md):
#   docker build -t misgen .
#   mkdir -p outputs && docker run --rm --gpus all -e WANDB_API_KEY -v "$PWD/outputs:/work/outputs" misgen
#   docker run --rm --gpus all -e WANDB_API_KEY -v "$PWD/outputs:/work/outputs" misgen misgen train -m seed=0,1,2
# Run dirs land in the mounted directory: outputs/train/<time>/, outputs/train-sweep/<time>/<job>/.
#
# The CUDA base and torch's CUDA build go together (12.6 needs an NVIDIA driver >= 560, or >= 525 through
# CUDA's minor-version compatibility). PyTorch keeps cu126 wheels as its legacy build (pre-Turing GPUs)
# through 2.14; a later torch needs a CUDA 13 base and the cu130 index. The torch wheel brings its
# own CUDA libraries (nvidia-* wheels), so the small `base` flavour of the image suffices: `runtime` would
# add a second copy of cuBLAS & co.
FROM nvidia/cuda:12.6.3-base-ubuntu24.04
LABEL org.opencontainers.image.title="misgen" \
      org.opencontainers.image.description="Objective misgeneralisation in deep RL: torch gridworlds, PPO" \
      org.opencontainers.image.licenses="MIT"

# The torch release CI tests (the Makefile's TORCH_SPEC), as a CUDA build.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
# The user the jobs run as; its ids should own the mounted output directory (most hosts' first user: 1000).
ARG UID=1000
ARG GID=1000

# Ubuntu 24.04's python3 is 3.12 (misgen needs >= 3.11). tini as PID 1 forwards docker stop's SIGTERM to
# the job, which then checkpoints after its iteration (docs/reliability.md; allow it the time: docker stop
# -t 60), and reaps sweep subprocesses.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates python3 python3-venv tini \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv "$VIRTUAL_ENV" \
    && pip install --no-cache-dir "pip==26.3" \
    && pip install --no-cache-dir --index-url "$TORCH_INDEX" "torch==${TORCH_VERSION}"

# The project itself (not editable) with the SLURM/submitit launchers and the video writer. torch is
# already satisfied, so pip keeps the CUDA build. The source is bind-mounted: no layer keeps it.
RUN --mount=type=bind,source=.,target=/src,rw \
    pip install --no-cache-dir "/src[cluster,video]" \
    && python -c "import agents, analysis, configs, envs, experiments, torch" \
    && misgen --help > /dev/null

# A non-root user (the base image's `ubuntu` user holds uid 1000: it goes). /work is the working directory
# and /work/outputs the volume, so Hydra's relative `outputs/...` run dirs land in the mounted directory
# (a mount point of its own, not a symlink: run dirs are compared by their resolved paths).
RUN (userdel --remove ubuntu 2> /dev/null || true) \
    && groupadd --gid "$GID" misgen \
    && useradd --uid "$UID" --gid "$GID" --create-home --shell /bin/bash misgen \
    && mkdir -p /work/outputs \
    && chown -R misgen:misgen /work
USER ${UID}:${GID}
WORKDIR /work
VOLUME ["/work/outputs"]

# Weights & Biases: WANDB_API_KEY is read from the environment at run time (docker run -e WANDB_API_KEY).
# It is deliberately no ARG or ENV here: either would bake the key into the image and its history. Without
# a key, runs log offline into their run dir (`wandb sync` uploads them later).
ENTRYPOINT ["/usr/bin/tini", "--"]
# The GPU default experiment (configs/train.yaml: arrow mazes, IMPALA CNN, 25 M env steps). Any other
# command replaces it: `misgen train experiment=keys_chests`, `misgen evaluate policy=outputs/train/<run>`.
CMD ["misgen", "train"]
