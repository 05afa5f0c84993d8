# One image for the course: JupyterLab (service `lab`) and TensorBoard (service `tensorboard`).
# Build and start:  docker compose up        (GPU: add -f docker-compose.gpu.yml, see README)
FROM debian:bookworm-slim

# why: bash with pipefail, so a failing command on the left of a pipe fails the build.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# why: the GPU override (docker-compose.gpu.yml) passes tensorflow[and-cuda]==2.21.0 here.
ARG TF_PACKAGE=tensorflow-cpu==2.21.0
# why: bounded wait for the ImageNet weights, so an offline build does not hang on the fetch.
ARG WEIGHTS_TIMEOUT=120

# why, in order: no apt prompts; the venv first on PATH; logs unbuffered; quiet TensorFlow C++
# logs; ImageNet weights baked into a shared Keras cache (not a home folder); `import fer_utils`
# from anywhere (kernels start in notebooks/); the course's FER_* defaults (compose overrides).
# No FER_PROFILE: the kit's default is laptop, and `pytest` (conftest.py) picks ci when it is
# unset or empty, as on the host.
ENV DEBIAN_FRONTEND=noninteractive \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    KERAS_HOME=/opt/keras \
    PYTHONPATH=/course \
    FER_WEIGHTS=imagenet \
    FER_DATA_DIR=/course/data \
    FER_LOG_DIR=/course/logs \
    HOME=/home/learner

# Python 3.11 from Debian (matches the pins in requirements.txt); no compilers: every compiled
# dependency ships a manylinux wheel (tflearn and face-recognition-models are pure Python).
# procps (ps) and less make the JupyterLab terminal usable.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates procps less \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv "$VIRTUAL_ENV"

# why: a non-root user; docker/entrypoint.sh re-maps its uid/gid at start to the owner of the
# mounted logs/ folder, so files written there belong to the host user.
RUN groupadd --gid 1000 learner \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/learner --shell /bin/bash learner

# Dependencies before the code, so editing the course does not re-install TensorFlow.
COPY requirements.txt /tmp/requirements.txt
# why: sed swaps the TensorFlow wheel when TF_PACKAGE asks for another build (GPU override),
# and drops playwright (165 MB): the browser test drives the container from the host.
RUN sed -i -e "s|^tensorflow-cpu==.*|${TF_PACKAGE}|" -e "/^playwright==/d" /tmp/requirements.txt \
 && grep -qxF "${TF_PACKAGE}" /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# why: JupyterLab 4 would greet every learner with a "get notified about official Jupyter
# news?" pop-up and check the web for updates: the course runs offline, in a classroom, and
# the pop-up covers the notebook. Its own settings switch both off (a learner can switch them
# on again under Settings > Notifications).
COPY docker/jupyterlab-overrides.json /opt/venv/share/jupyter/lab/settings/overrides.json

WORKDIR /course
COPY pyproject.toml conftest.py README.md ./
COPY fer_utils/ fer_utils/

# why: ImageNet VGG16 weights baked into the image (KERAS_HOME) when the network allows; an
# offline build must still succeed, quickly, and say what that means.
RUN mkdir -p "$KERAS_HOME" \
 && { timeout "${WEIGHTS_TIMEOUT}" python -m fer_utils fetch-weights \
      || echo "no ImageNet weights: notebooks run with random init"; } \
 && chmod -R a+rwX "$KERAS_HOME"

COPY docker/ docker/
# why: the README's in-container `pytest` runs the benchmark scripts' tests too.
COPY tests/ tests/
COPY benchmarks/ benchmarks/
COPY notebooks/ notebooks/
# why: the mount points exist (and are the learner's) even when run without compose mounts.
RUN mkdir -p logs data \
 && chmod 0755 docker/entrypoint.sh \
 && chown -R learner:learner /course /home/learner

EXPOSE 8888 6006

# JupyterLab answers on /api (no token needed for that endpoint); TensorBoard's own check is
# in docker-compose.yml. Python instead of curl: bookworm-slim has no curl.
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=4 \
  CMD ["python", "/course/docker/healthcheck.py", "http://127.0.0.1:8888/api"]

# why: starts as root only to re-map the learner's uid/gid, then drops privileges.
ENTRYPOINT ["/course/docker/entrypoint.sh"]
# why: --allow-root only matters when logs/ is root-owned (then we run as its owner, root);
# port_retries=0 makes a taken port fail loudly instead of moving silently.
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--allow-root", \
     "--ServerApp.port_retries=0", "--ServerApp.root_dir=/course"]
