#!/bin/sh
# Runs once, when the postgres container starts on an empty data volume
# (/docker-entrypoint-initdb.d). Creates one role and one database per application:
#   prefect / prefect   (Prefect server)      password: PREFECT_DB_PASSWORD
#   mlflow  / mlflow    (MLflow backend store) password: MLFLOW_DB_PASSWORD
# Each role owns only its database and PUBLIC may not connect to either, so neither
# application can read the other's tables. Passwords reach SQL as psql variables (:'var'
# quotes them as literals), never spliced into the SQL text.
# Changing a password later: ALTER ROLE ... PASSWORD ...; this script does not run again.
: "${PREFECT_DB_PASSWORD:?PREFECT_DB_PASSWORD is not set}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set}"

psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v prefect_password="$PREFECT_DB_PASSWORD" \
  -v mlflow_password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE prefect LOGIN PASSWORD :'prefect_password';
CREATE DATABASE prefect OWNER prefect;
REVOKE ALL ON DATABASE prefect FROM PUBLIC;
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
SQL
