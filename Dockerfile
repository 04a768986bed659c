# One image for every Handoff service: the command picks the service.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml ./
COPY libs libs
COPY schemas schemas
COPY services services
COPY deploy deploy
RUN pip install --no-cache-dir . && useradd --system --uid 10001 handoff \
    && mkdir -p /var/spool/handoff/notify && chown handoff /var/spool/handoff/notify
# notify's spool (decision 0021): a volume mounted here starts owned by the service's user.
USER handoff
ENTRYPOINT ["handoff"]
