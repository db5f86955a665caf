"""Pluggable tiers and origins, installed as ``athena_warm.adapters``.

Each adapter imports its heavy dependency (boto3, pyathena, duckdb, redis) on first use.
"""
