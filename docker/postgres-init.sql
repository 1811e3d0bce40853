-- First start of the stack's PostgreSQL (docker/compose.yaml): one database per service.
-- The password is POSTGRES_PASSWORD from the environment; nothing secret lives here.
CREATE DATABASE airflow;
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
