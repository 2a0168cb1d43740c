#!/bin/sh
# Run once by the postgres image when it creates its cluster (docker-entrypoint-initdb.d):
# the postgres-replica service streams from this server with the postgres user's password.
echo "host replication postgres all scram-sha-256" >> "$PGDATA/pg_hba.conf"
