"""Annotation tables, queries and materialized versions (CAVE's annotation + materialization engines)."""
