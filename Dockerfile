# The evalgate service image (API and worker). The sandbox images are separate: `evalgate images build`.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service/ service/
COPY sandbox_images/ sandbox_images/
RUN pip install --no-cache-dir -e . \
 && useradd --system --uid 10000 --home /var/lib/evalgate evalgate
EXPOSE 8000
CMD ["evalgate", "serve", "--host", "0.0.0.0", "--port", "8000"]
