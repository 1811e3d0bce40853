# The Airflow image of the stack (docker/compose.yaml): the official Airflow 3.3 image plus this
# package with the orchestration extra (MLflow client, DVC with S3, Great Expectations, the docker and
# kubernetes providers). Training never runs here: the DAG hands it to the trainer image
# (docker/trainer.Dockerfile) through the DockerOperator, so NeMo and torch stay out of this image.
#
#   docker build -f docker/airflow.Dockerfile -t ncbi-retrain-airflow:latest .
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

# The package alone first would not help the cache: its pins are the expensive part, so both go in one
# layer keyed on pyproject.toml + tasks/. `apache-airflow[postgres]==3.3.2` in the extra equals the base's
# Airflow, so pip keeps it (and the image's providers) as they are.
COPY --chown=airflow:root pyproject.toml README.md /opt/ncbi-retrain/
COPY --chown=airflow:root tasks /opt/ncbi-retrain/tasks
RUN pip install --no-cache-dir "/opt/ncbi-retrain[airflow]" \
    && pip check \
    && ncbi-retrain --help >/dev/null

COPY --chown=airflow:root dags /opt/airflow/dags
ENV AIRFLOW__CORE__LOAD_EXAMPLES=False \
    DVC_NO_ANALYTICS=1
